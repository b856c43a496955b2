"""Where examples come from: image folders, TFRecord shards and TFDS datasets.

Every source yields raw records `{"image": encoded bytes, "label": int32, "name": str}`
(decoding happens later, fused with cropping) and knows its class names, its example
count, and how to shard and shuffle at the file level. Class order is the sorted
class-folder names (WordNet ids for ImageNet), which is also TFDS's and the common
TFRecord layout's order. Names sort as text (Python's `sorted`, by code point, as
torchvision's `ImageFolder` sorts them): numeric folders `1, 2, 10` become the
classes `1, 10, 2`, with a warning; pass `class_names=` for another order.
"""

import fnmatch
import glob
import os
import re
import stat
import warnings

import keras
import tensorflow as tf

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
# The common ImageNet TFRecord layout (inception's build_imagenet_data.py, the TPU
# imagenet_to_gcs.py): shard names and their example counts.
KNOWN_TFRECORD_COUNTS = {"train-*-of-01024": 1_281_167, "validation-*-of-00128": 50_000}
# What TFDS's manual-download ImageNet builders read from their manual directory.
MANUAL_FILES = {
    "imagenet2012": ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"),
    "imagenet2012_subset": ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"),
}


class DataSourceError(ValueError):
    """A data source that is missing, empty or malformed."""


def _is_image(name):
    return name.lower().endswith(IMAGE_EXTENSIONS)


class _FileSource:
    """Shared by the file-based sources: shard and shuffle the file list, then read."""

    def dataset(self, shuffle_files, seed, shard, parallel):
        files = self.file_dataset()
        if shard:
            index, count = shard
            if count > len(self.files):
                raise DataSourceError(
                    f"Cannot shard {len(self.files)} files of {self.description} over {count} hosts.")
            files = files.shard(count, index)
        if shuffle_files:
            files = files.shuffle(len(self.files), seed=seed, reshuffle_each_iteration=True)
        return self.read(files, parallel)

    def examples_in_shard(self, shard):
        """Examples one host reads (exact when files are examples, else an estimate)."""
        if not shard:
            return self.num_examples
        if self.files_are_examples:
            return len(self.files[shard[0]::shard[1]])
        return self.num_examples // shard[1]


class ImageFolder(_FileSource):
    """`root/<split>/<class>/*.JPEG`, or a flat `root/<split>/` with a label file.

    Args:
        root: the dataset folder (holding split folders) or a split folder itself.
        split: sub-folder to read, e.g. "train" or "val"; ignored when absent.
        labels_file: for a flat folder: lines `<file name>[,\\s]<class>` (extra fields
            after the class are ignored; `LOC_val_solution.csv` works), or one class
            per line in sorted file-name order (TFDS's `validation_labels.txt`).
        class_names: the class order; default: the sorted class folders of
            `root/train` when it exists, else of this split, else the sorted classes
            of the label file.
    """

    kind = "image folder"

    def __init__(self, root, split=None, labels_file=None, class_names=None):
        root = os.fspath(root)
        if not os.path.isdir(root):
            raise DataSourceError(f"Image folder {root!r} does not exist.")
        directory = os.path.join(root, split) if split and os.path.isdir(os.path.join(root, split)) else root
        self.description = directory
        self.skipped = []  # (path, reason) of entries left out while listing
        classes = sorted(e.name for e in _entries(directory, self.skipped) if _is_dir(e, self.skipped))
        if classes:
            self.class_names = list(class_names or self._train_classes(root) or classes)
            index = {c: i for i, c in enumerate(self.class_names)}
            unknown = [c for c in classes if c not in index]
            if unknown:
                raise DataSourceError(
                    f"{directory} has class folders not among the {len(index)} classes: {unknown[:5]}")
            files, labels, empty = [], [], []
            progress = keras.utils.Progbar(len(classes), unit_name="class folder") if len(classes) > 100 else None
            for k, name in enumerate(classes):
                found = sorted(_walk_images(os.path.join(directory, name), self.skipped))
                files += found
                labels += [index[name]] * len(found)
                if not found:
                    empty.append(name)
                if progress:
                    progress.update(k + 1)
            if empty and files:
                warnings.warn(
                    f"ffzoo.data: {len(empty)} class folder(s) of {directory} hold no images: "
                    f"{_listed(empty)} (their classes keep their index; no example has them).", stacklevel=3)
        else:
            files = sorted(os.path.join(directory, e.name) for e in _entries(directory, self.skipped)
                           if _is_image(e.name) and _is_readable_file(e, self.skipped))
            if not files:
                raise DataSourceError(f"{directory} holds no images (nor class folders).")
            if labels_file is None:
                raise DataSourceError(
                    f"{directory} is a flat folder of {len(files)} images: pass labels_file= "
                    "(lines '<file> <class>', or one class per line in sorted file order).")
            per_file = _read_labels(labels_file, files, directory)
            self.class_names = list(class_names or self._train_classes(root) or sorted(set(per_file)))
            index = {c: i for i, c in enumerate(self.class_names)}
            missing = sorted({c for c in per_file if c not in index})
            if missing:
                raise DataSourceError(f"{labels_file} names classes not in the class list: {missing[:5]}")
            labels = [index[c] for c in per_file]
        if self.skipped:
            warnings.warn(
                f"ffzoo.data: left out {len(self.skipped)} entr{'y' if len(self.skipped) == 1 else 'ies'} "
                f"of {directory} while listing: "
                + _listed([f"{_printable(p)} ({why})" for p, why in self.skipped]), stacklevel=3)
        if not files:
            raise DataSourceError(f"{directory} has class folders but no images in them.")
        if not class_names:
            _warn_if_numbers_sorted_as_text(self.class_names, directory)
        self.files, self.labels = files, labels
        self.num_examples = len(files)

    @staticmethod
    def _train_classes(root):
        train = os.path.join(root, "train")
        if os.path.isdir(train):
            return sorted(e.name for e in _entries(train, []) if _is_dir(e, []))
        return None

    def file_dataset(self):
        return tf.data.Dataset.from_tensor_slices(
            # bytes, not str: a file name need not be UTF-8 (os.fsencode undoes Python's
            # surrogate escapes, so every name is the file system's own)
            {"name": tf.constant([os.fsencode(f) for f in self.files], tf.string),
             "label": tf.constant(self.labels, tf.int32)})

    def read(self, files, parallel):
        def load(item):
            return {"image": tf.io.read_file(item["name"]), "label": item["label"], "name": item["name"]}
        return files.map(load, num_parallel_calls=parallel)

    files_are_examples = True


def _printable(path):
    """A path for messages: bytes that are not UTF-8 shown as escapes."""
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


def _listed(items, limit=10):
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def _entries(directory, skipped):
    """`os.scandir(directory)`, sorted; an unreadable folder is left out and noted."""
    try:
        with os.scandir(directory) as entries:
            return sorted(entries, key=lambda e: e.name)
    except OSError as error:
        skipped.append((directory, f"cannot list: {error.strerror or error}"))
        return []


def _is_dir(entry, skipped):
    """Whether `entry` is a folder (following a symlink); a symlink that loops back on
    itself (ELOOP) or cannot be followed is noted."""
    try:
        return entry.is_dir()
    except OSError as error:
        skipped.append((entry.path, f"cannot follow: {error.strerror or error}"))
        return False


def _is_readable_file(entry, skipped):
    """Whether `entry` is a regular file (following symlinks); dangling symlinks and
    special files (a FIFO would block the reader forever) are noted."""
    try:
        mode = os.stat(entry.path).st_mode
    except OSError as error:
        reason = "dangling symlink" if entry.is_symlink() else f"cannot stat: {error.strerror or error}"
        skipped.append((entry.path, reason))
        return False
    if stat.S_ISREG(mode):
        return True
    if not stat.S_ISDIR(mode):
        skipped.append((entry.path, "not a regular file"))
    return False


def _walk_images(directory, skipped):
    """Image files under `directory`, following symlinks, each real folder once.

    Terminates on any tree: a folder already listed (same device and inode) is not
    entered again, so a symlink loop is noted in `skipped` instead of listing the
    same images again and again (and several loops do not multiply the walk).
    Folders reached without symlinks are listed first, so a symlink to a folder of
    the tree is the one left out, never the folder itself.
    """
    visited, real, linked = set(), [directory], []
    while real or linked:
        folder = real.pop() if real else linked.pop()
        try:
            info = os.stat(folder)
        except OSError as error:
            skipped.append((folder, f"cannot stat: {error.strerror or error}"))
            continue
        if (info.st_dev, info.st_ino) in visited:
            skipped.append((folder, "symlink loop or second link to a folder already listed"))
            continue
        visited.add((info.st_dev, info.st_ino))
        for entry in _entries(folder, skipped):
            if _is_dir(entry, skipped):
                (linked if entry.is_symlink() else real).append(entry.path)
            elif _is_image(entry.name) and _is_readable_file(entry, skipped):
                yield entry.path


def _warn_if_numbers_sorted_as_text(names, where):
    if len(names) > 1 and all(n.isdigit() for n in names) and names != sorted(names, key=int):
        warnings.warn(
            f"ffzoo.data: the classes of {where} are numbers, ordered as text (as torchvision's "
            f"ImageFolder orders them): label 0 is {names[0]!r}, label 1 is {names[1]!r}, ...; "
            "pass class_names= for another order.", stacklevel=4)


def _read_label_lines(labels_file):
    """`(line number, text)` of the non-blank lines of a UTF-8 label file."""
    if not os.path.isfile(labels_file):
        raise DataSourceError(f"Label file {labels_file!r} does not exist.")
    with open(labels_file, "rb") as f:
        raw = f.read()
    lines = []
    for number, line in enumerate(raw.splitlines(), 1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DataSourceError(
                f"{labels_file}, line {number}: not UTF-8 text (byte {line[error.start]:#04x} at "
                f"column {error.start + 1}); save the label file as UTF-8.") from None
        text = text.lstrip("\ufeff").strip() if number == 1 else text.strip()
        if text:
            lines.append((number, text))
    return lines


def _read_labels(labels_file, files, directory):
    """The class of each of `files` from a label file (see `ImageFolder`).

    Lines that name a file of the folder (`<file>[,\\s]<class>...`) give that file's
    class; other lines of two or more fields are ignored (a CSV header, files of
    another folder). A file named twice, a line naming a file without a class, or
    a one-class-per-line file with a line of several fields is an error naming the
    line.
    """
    lines = _read_label_lines(labels_file)
    stems = {os.path.splitext(os.path.basename(p))[0]: p for p in files}
    split = [(number, text, [x for x in re.split(r"[,\s]+", text) if x]) for number, text in lines]
    named = lambda fields: os.path.splitext(os.path.basename(fields[0]))[0] in stems
    if any(named(fields) for _, _, fields in split):
        pairs, first = {}, {}
        for number, text, fields in split:
            stem = os.path.splitext(os.path.basename(fields[0]))[0]
            if len(fields) < 2:
                raise DataSourceError(
                    f"{labels_file}, line {number}: {text!r} is not '<file> <class>' (the other "
                    "lines name files of the folder).")
            if stem not in stems:
                continue
            if stem in pairs:
                how = ("labels it again" if pairs[stem] == fields[1]
                       else f"gives it class {fields[1]!r}, line {first[stem]} gave {pairs[stem]!r}")
                raise DataSourceError(
                    f"{labels_file}, line {number}: {fields[0]!r} was labelled on line {first[stem]}; "
                    f"this line {how}. Each file must be named once.")
            pairs[stem], first[stem] = fields[1], number
        missing = [p for s, p in stems.items() if s not in pairs]
        if missing:
            raise DataSourceError(
                f"{labels_file} has no label for {len(missing)} images, e.g. "
                f"{[_printable(m) for m in missing[:3]]}")
        return [pairs[os.path.splitext(os.path.basename(p))[0]] for p in files]
    for number, text, fields in split:
        if len(fields) != 1:
            raise DataSourceError(
                f"{labels_file}, line {number}: {text!r} has {len(fields)} fields; a "
                "one-class-per-line file has one, and '<file> <class>' lines must name files of "
                f"{directory}.")
    if len(split) != len(files):
        raise DataSourceError(
            f"{labels_file}: {len(split)} labels for {len(files)} images, and no line names a "
            "file of the folder.")
    return [fields[0] for _, _, fields in split]


class TFRecords(_FileSource):
    """TFRecord shards in the common ImageNet layout (`image/encoded`, `image/class/label`).

    Args:
        pattern: a glob of shard files, or a folder holding `<split>-*` shards.
        split: the shard prefix when `pattern` is a folder.
        label_offset: added to `image/class/label`; -1 (default) for the common
            layout's labels 1..1000 (Google's scripts keep 0 for "background").
        num_classes: label range after the offset (1000).
        num_examples: the example count; known for the standard ImageNet shard
            names, counted (once, by reading) otherwise.
    """

    kind = "TFRecord shards"
    files_are_examples = False

    def __init__(self, pattern, split=None, label_offset=-1, num_classes=1000, num_examples=None,
                 class_names=None):
        pattern = os.fspath(pattern)
        if os.path.isdir(pattern):
            pattern = os.path.join(pattern, f"{split or 'train'}-*")
        self.files = sorted(tf.io.gfile.glob(pattern))
        self.description = pattern
        if not self.files:
            raise DataSourceError(f"No TFRecord files match {pattern!r}.")
        self.label_offset = int(label_offset)
        self.num_classes = int(num_classes)
        if class_names is None and self.num_classes == 1000:
            from ffzoo.imagenet import imagenet_classes
            class_names = [wnid for wnid, _ in imagenet_classes()]
        self.class_names = class_names
        self.num_examples = num_examples or self._known_count() or self._count()

    def _known_count(self):
        names = [os.path.basename(f) for f in self.files]
        for shard_pattern, count in KNOWN_TFRECORD_COUNTS.items():
            total = int(shard_pattern.rsplit("-", 1)[1])
            if len(names) == total and all(fnmatch.fnmatch(n, shard_pattern) for n in names):
                return count
        return None

    def _count(self):
        return int(tf.data.TFRecordDataset(self.files).reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))

    def file_dataset(self):
        return tf.data.Dataset.from_tensor_slices({"name": tf.constant(self.files)})

    def read(self, files, parallel):
        features = {
            "image/encoded": tf.io.FixedLenFeature([], tf.string),
            "image/class/label": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
            "image/filename": tf.io.FixedLenFeature([], tf.string, default_value=""),
        }
        offset, classes = self.label_offset, self.num_classes

        def parse(serialized):
            example = tf.io.parse_single_example(serialized, features)
            label = tf.cast(example["image/class/label"], tf.int32) + offset
            checks = [
                tf.debugging.assert_less(
                    label, classes, message=f"label out of range: check label_offset (now {offset})"),
                tf.debugging.assert_non_negative(
                    label, message=f"negative label: check label_offset (now {offset}; 0 for 0-based records)"),
            ]
            with tf.control_dependencies(checks):
                label = tf.identity(label)
            return {"image": example["image/encoded"], "label": label, "name": example["image/filename"]}

        records = files.interleave(lambda f: tf.data.TFRecordDataset(f["name"]), cycle_length=8,
                                   num_parallel_calls=parallel, deterministic=None)
        return records.map(parse, num_parallel_calls=parallel)


class TFDS:
    """Any TFDS image-classification dataset (e.g. `imagenet2012`, `cifar10`).

    `imagenet2012` needs the ImageNet tars in `manual_dir` (default
    `<data_dir>/downloads/manual`) the first time; TFDS then prepares its records.
    """

    kind = "TFDS dataset"
    files_are_examples = False

    def __init__(self, name, split="train", data_dir=None, manual_dir=None):
        import tensorflow_datasets as tfds

        self.tfds = tfds
        try:
            self.builder = tfds.builder(name, data_dir=data_dir)
        except Exception as error:  # tfds raises its own DatasetNotFoundError
            raise DataSourceError(f"TFDS has no dataset {name!r}: {error}") from None
        self.split = split
        self.description = f"tfds:{name}[{split}]"
        info = self.builder.info
        if not info.supervised_keys:
            raise DataSourceError(f"TFDS dataset {name!r} has no (image, label) supervised keys.")
        self.image_key, self.label_key = info.supervised_keys
        self.class_names = list(info.features[self.label_key].names)
        self.manual_dir = manual_dir
        try:
            self.num_examples = info.splits[split].num_examples
        except KeyError:
            self.num_examples = None  # unknown until prepared (or under tfds mock data)

    def prepare(self):
        tfds = self.tfds
        if not self.builder.is_prepared():
            self._check_manual_dir()
            config = tfds.download.DownloadConfig(manual_dir=self.manual_dir)
            self.builder.download_and_prepare(download_config=config)
            try:
                self.num_examples = self.builder.info.splits[self.split].num_examples
            except KeyError:  # tfds.testing.mock_data prepares nothing
                self.num_examples = None

    def _check_manual_dir(self):
        """A clear error, before TFDS asserts, when a manual-download dataset lacks its files."""
        builder = self.builder
        if not getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None):
            return
        # tfds.testing.mock_data replaces download_and_prepare: nothing is read then.
        if getattr(type(builder).download_and_prepare, "__module__", "").startswith("tensorflow_datasets.testing"):
            return
        root = os.fspath(getattr(builder, "_data_dir_root", None) or os.path.dirname(os.path.dirname(
            os.path.dirname(os.fspath(builder.data_dir)))))  # <root>/<name>/<version>
        manual = os.fspath(self.manual_dir or os.path.join(root, "downloads", "manual"))
        needed = MANUAL_FILES.get(builder.name)
        if needed:
            missing = [f for f in needed if not os.path.isfile(os.path.join(manual, f))]
        else:
            missing = [] if os.path.isdir(manual) and os.listdir(manual) else ["its files"]
        if not missing:
            return
        where = "ImageNet's ILSVRC2012 tars (https://image-net.org/download-images, after registering)" \
            if needed else "the files its TFDS instructions name"
        raise DataSourceError(
            f"{self.description} is not prepared in {root} and its manual "
            f"directory {manual} lacks {', '.join(missing)}: put {where} there, or pass their "
            "folder as --manual-dir (manual_dir= in ffzoo.data.load); TFDS then prepares the "
            "dataset once. For the embedded run that needs no download, use bin/demo.")

    def examples_in_shard(self, shard):
        if not shard or self.num_examples is None:
            return self.num_examples
        return self.num_examples // shard[1]

    def dataset(self, shuffle_files, seed, shard, parallel):
        tfds = self.tfds
        context = None
        if shard:
            context = tf.distribute.InputContext(num_input_pipelines=shard[1], input_pipeline_id=shard[0])
        read_config = tfds.ReadConfig(shuffle_seed=seed, input_context=context, add_tfds_id=True)
        ds = self.builder.as_dataset(split=self.split, shuffle_files=shuffle_files,
                                     decoders={self.image_key: tfds.decode.SkipDecoding()},
                                     read_config=read_config)
        image_key, label_key = self.image_key, self.label_key
        return ds.map(lambda e: {"image": e[image_key], "label": tf.cast(e[label_key], tf.int32),
                                 "name": e["tfds_id"]})


def resolve(source, split, data_dir=None, manual_dir=None, labels_file=None, label_offset=-1,
            class_names=None, num_classes=1000):
    """A source object from what the user passed (see `ffzoo.data.load`)."""
    if not isinstance(source, (str, os.PathLike)):
        return source
    text = os.fspath(source)
    if text.startswith("tfds:"):
        return TFDS(text[len("tfds:"):], split, data_dir, manual_dir)
    if text.startswith("tfrecord:"):
        return TFRecords(text[len("tfrecord:"):], split, label_offset, num_classes, class_names=class_names)
    if os.path.isdir(text):
        if glob.glob(os.path.join(text, f"{split}-*")) and not os.path.isdir(os.path.join(text, split)):
            return TFRecords(text, split, label_offset, num_classes, class_names=class_names)
        return ImageFolder(text, split, labels_file, class_names)
    if any(c in text for c in "*?["):
        return TFRecords(text, split, label_offset, num_classes, class_names=class_names)
    if os.sep in text or text.startswith("."):
        raise DataSourceError(f"Data source {text!r} does not exist.")
    return TFDS(text, split, data_dir, manual_dir)
