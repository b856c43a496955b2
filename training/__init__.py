"""Training and evaluation of ffzoo models with keras.Model.fit (`python -m training.train`)."""
