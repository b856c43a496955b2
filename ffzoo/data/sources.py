"""Where examples come from: image folders, TFRecord shards and TFDS datasets.

Every source yields raw records `{"image": encoded bytes, "label": int32, "name": str}`
(decoding happens later, fused with cropping) and knows its class names, its example
count, and how to shard and shuffle at the file level. Class order is the sorted
class-folder names (WordNet ids for ImageNet), which is also TFDS's and the common
TFRecord layout's order. Names sort as text (Python's `sorted`, by code point, as
torchvision's `ImageFolder` sorts them): numeric folders `1, 2, 10` become the
classes `1, 10, 2`, with a warning; pass `class_names=` for another order.

Image folders hold split folders (`train/`, `val/` or `validation/`, ...), or only
class folders, then split per class into a seeded "train" and "val" part (see
`ImageFolder`).
"""

import difflib
import fnmatch
import glob
import hashlib
import math
import os
import re
import stat
import warnings

import keras
import tensorflow as tf

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
# Split names of a folder of split folders: "val", "validation" and "valid" (Roboflow's
# exports) name the same split, each folder answering each name; any of these
# sub-folders (in any case) marks `root` as a folder of split folders, not of classes.
VALIDATION_NAMES = ("val", "validation", "valid")
SPLIT_NAMES = ("train", "val", "validation", "valid", "test")
# A folder of class folders without split folders: the share of each class held out
# as the validation part (`ImageFolder(val_fraction=)`), and the seed choosing it.
DEFAULT_VAL_FRACTION = 0.2
DEFAULT_SPLIT_SEED = 0
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
    return name.lower().endswith(IMAGE_EXTENSIONS) and not _is_hidden(name)


def _is_hidden(name):
    """Names starting with a dot (`.DS_Store`, macOS's `._photo.jpg` resource forks,
    `.ipynb_checkpoints/`) are not images or classes: left out, as `ls` leaves them."""
    return name.startswith(".")


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
    """`root/<split>/<class>/*.JPEG`, `root/<class>/*.JPEG`, or a flat folder with a label file.

    The folder a split reads:

    - `root/<split>/` when it exists, else a folder whose name differs only in
      case (`Train/`). "val", "validation" and "valid" name the same split: each
      such folder answers each name.
    - An error naming the folders found when `root` holds other split folders
      (`train/`, `val/`, `validation/`, `valid/`, `test/`, in any case) but not
      this one.
    - `root` itself when it is the split's own folder (its name is the split's:
      `.../val` for "val" or "validation"), when `split` is None or "all", and for
      a flat folder of images (with `labels_file`).
    - A folder of class folders without split folders is split per class, seeded:
      "val" / "validation" read the held-out part (`val_fraction` of each class's
      images, rounded; at least one of every class of two or more images, never a
      class's last one), "train" the rest. The parts are disjoint and together hold
      every image; the same `split_seed` on the same files gives the same parts, in
      every process (the order is a SHA-256 of the seed and each file's path
      relative to `root`).
      One printed line says so. Other split names are an error, and so is the
      name of a split folder asked for another split (`.../train` for "val": its
      parent holds both).

    Hidden entries (names starting with a dot: `.DS_Store`, `._photo.jpg`,
    `.ipynb_checkpoints/`) are neither images nor classes. Extensions match in any
    case (`.JPG`, `.Jpeg`, `.PNG`).

    Args:
        root: the dataset folder (holding split folders or class folders) or a split
            folder itself.
        split: the split to read, e.g. "train" or "val" (see above); None: all of `root`.
        labels_file: for a flat folder: lines `<file name>[,\\s]<class>` (extra fields
            after the class are ignored; `LOC_val_solution.csv` works), or one class
            per line in sorted file-name order (TFDS's `validation_labels.txt`).
        class_names: the class order; default: the sorted class folders of
            `root/train` when it exists, else of this split, else the sorted classes
            of the label file.
        val_fraction: the share of each class held out as "val" in a folder of class
            folders without split folders (default 0.2), in (0, 1).
        split_seed: the seed choosing the held-out files (default 0). It is not the
            pipeline's shuffling `seed`, so a training and an evaluation pipeline of
            the same folder split it alike.
    """

    kind = "image folder"

    def __init__(self, root, split=None, labels_file=None, class_names=None,
                 val_fraction=DEFAULT_VAL_FRACTION, split_seed=DEFAULT_SPLIT_SEED):
        root = os.fspath(root)
        if not os.path.isdir(root):
            raise DataSourceError(f"Image folder {root!r} does not exist.")
        if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) \
                or not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be a number between 0 and 1 (exclusive); got {val_fraction!r}.")
        if isinstance(split_seed, bool) or not isinstance(split_seed, int):
            raise ValueError(f"split_seed must be an integer; got {split_seed!r}.")
        directory, self.part = _split_folder(root, split)
        self.description = directory if self.part is None else f"{directory}[{self.part}]"
        self.val_fraction, self.split_seed = val_fraction, split_seed
        self.skipped = []  # (path, reason) of entries left out while listing
        classes = sorted(e.name for e in _entries(directory, self.skipped)
                         if not _is_hidden(e.name) and _is_dir(e, self.skipped))
        if classes:
            self.class_names = list(class_names or self._train_classes(root) or classes)
            index = {c: i for i, c in enumerate(self.class_names)}
            unknown = [c for c in classes if c not in index]
            if unknown:
                raise DataSourceError(
                    f"{directory} has class folders not among the {len(index)} classes: {unknown[:5]}")
            files, labels, empty, total, held_out = [], [], [], 0, 0
            progress = keras.utils.Progbar(len(classes), unit_name="class folder") if len(classes) > 100 else None
            for k, name in enumerate(classes):
                found = sorted(_walk_images(os.path.join(directory, name), self.skipped))
                if not found:
                    empty.append(name)
                total += len(found)
                if self.part:
                    val = _held_out(found, directory, val_fraction, split_seed)
                    held_out += len(val)
                    found = [f for f in found if (f in val) == (self.part == "val")]
                files += found
                labels += [index[name]] * len(found)
                if progress:
                    progress.update(k + 1)
            if empty and total:
                warnings.warn(
                    f"ffzoo.data: {len(empty)} class folder(s) of {directory} hold no images: "
                    f"{_listed(empty)} (their classes keep their index; no example has them).", stacklevel=3)
            if self.part and total:
                self._announce(directory, total - held_out, held_out)
                if not files:
                    raise DataSourceError(
                        f"{directory}: no class folder holds two images, so nothing is held out for "
                        "validation; add images, or give it train/ and val/ folders.")
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

    def _announce(self, directory, train_count, val_count):
        """Prints how the folder was split, once per process for a folder and setting."""
        key = (os.path.abspath(directory), self.val_fraction, self.split_seed, train_count, val_count)
        if key not in _ANNOUNCED:
            _ANNOUNCED.add(key)
            print(f"ffzoo.data: {directory} has class folders but no train/ or val/ folder: split "
                  f"per class into {train_count} train and {val_count} val images (val_fraction "
                  f"{self.val_fraction}, split_seed {self.split_seed}).", flush=True)

    @staticmethod
    def _train_classes(root):
        train = _find_split(root, ["train"])
        return _folders(train) if train else None

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


# (folder, fraction, seed, counts) of the seeded splits announced in this process
_ANNOUNCED = set()


def _split_folder(root, split):
    """`(folder to list, part)` for `ImageFolder`: part None (every image of the
    folder), or "train" / "val" of a folder of class folders (see `ImageFolder`)."""
    if split is None or split == "all":
        return root, None
    validation = split.lower() in VALIDATION_NAMES
    names = list(dict.fromkeys((split,) + (VALIDATION_NAMES if validation else ())))
    found = _find_split(root, names)
    if found:
        return found, None
    folders = _folders(root)
    shown = [f"{n}/" for n in (VALIDATION_NAMES if validation else names)]
    wanted = shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"
    if any(f.lower() in SPLIT_NAMES for f in folders):
        raise DataSourceError(f"{root} has no {wanted} folder (found: {_listed([f + '/' for f in folders])}).")
    own = os.path.basename(os.path.normpath(root))
    if own.lower() in {n.lower() for n in names} or not folders:  # the split's own folder, or flat
        return root, None
    if own.lower() in SPLIT_NAMES:
        raise DataSourceError(
            f"{root} is a {own}/ split folder, not a {wanted} one: pass the folder holding both, "
            f"or the {split} folder itself.")
    if split.lower() == "train":
        return root, "train"
    if validation:
        return root, "val"
    raise DataSourceError(
        f"{root} has no {split}/ folder: it is a folder of class folders, split per class into "
        "'train' and 'val' (or 'validation'); split 'all' reads every image.")


def _folders(root):
    """The names of `root`'s sub-folders that are not hidden, sorted."""
    return [e.name for e in _entries(root, []) if not _is_hidden(e.name) and _is_dir(e, [])]


def _find_split(root, names):
    """`root/<name>` for the first of `names` that is a folder, else one whose name
    differs only in case (`Train/`, `VALID/`), else None."""
    for name in names:
        if os.path.isdir(os.path.join(root, name)):
            return os.path.join(root, name)
    lowered = [n.lower() for n in names]
    matches = sorted((lowered.index(f.lower()), f) for f in _folders(root) if f.lower() in lowered)
    return os.path.join(root, matches[0][1]) if matches else None


def _held_out(files, directory, fraction, seed):
    """The files of one class held out for validation: the first `round(n * fraction)`
    (at least 1, at most n - 1; none of a single image) in the order of the SHA-256 of
    the seed and each path relative to `directory`."""
    n = len(files)
    if n < 2:
        return set()
    count = min(n - 1, max(1, math.floor(n * fraction + 0.5)))
    rank = lambda f: hashlib.sha256(b"%d\0" % seed + os.fsencode(os.path.relpath(f, directory))).digest()
    return set(sorted(files, key=rank)[:count])


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
            if _is_hidden(entry.name):
                continue
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

    def __init__(self, name, split="train", data_dir=None, manual_dir=None, folder_too=False):
        import tensorflow_datasets as tfds

        self.tfds = tfds
        try:
            self.builder = tfds.builder(name, data_dir=data_dir)
        except tfds.core.DatasetNotFoundError:  # its message lists every dataset TFDS has
            raise DataSourceError(_unknown_dataset(name, tfds, folder_too)) from None
        except Exception as error:  # an unknown config or version: TFDS's message, on one line
            raise DataSourceError(f"TFDS has no dataset {name!r}: {' '.join(str(error).split())}") from None
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
            class_names=None, num_classes=1000, val_fraction=DEFAULT_VAL_FRACTION,
            split_seed=DEFAULT_SPLIT_SEED):
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
        return ImageFolder(text, split, labels_file, class_names, val_fraction, split_seed)
    if any(c in text for c in "*?["):
        return TFRecords(text, split, label_offset, num_classes, class_names=class_names)
    if os.sep in text or text.startswith("."):
        raise DataSourceError(f"Data source {text!r} does not exist.")
    return TFDS(text, split, data_dir, manual_dir, folder_too=True)


def _unknown_dataset(name, tfds, folder_too):
    """One line for a name TFDS does not know (and, `folder_too`, that is no folder
    either), suggesting close folder names of the working directory and TFDS names."""
    base = name.split("/")[0].split(":")[0]
    folders = [e.name for e in _entries(os.getcwd(), []) if not _is_hidden(e.name) and _is_dir(e, [])] \
        if folder_too else []
    close = [f"{n}/ (a folder here)" for n in difflib.get_close_matches(base, folders, n=2, cutoff=0.6)]
    close += [f"{n!r}" for n in difflib.get_close_matches(
        base, tfds.list_builders(with_community_datasets=False), n=3, cutoff=0.6)]
    hint = f"; close names: {', '.join(close)}" if close else ""
    where = f"No folder {name!r} in {os.getcwd()}, and " if folder_too else ""
    return f"{where}TFDS has no dataset {name!r}{hint}."

