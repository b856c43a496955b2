"""The bad-input zoo of ffzoo.data: every file a user's folder may hold is read (when valid)
or skipped and reported with its reason, never a crash or a hang. Files are generated."""

import io
import os
import signal
import struct
import zlib

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

import ffzoo.data as fd
from ffzoo.data import pipeline as fdp

pytestmark = pytest.mark.once  # tf.data only: no Keras backend involved


def _picture(height=48, width=64, seed=0):
    y, x = np.mgrid[:height, :width]
    smooth = np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], -1)
    noise = np.random.default_rng(seed).integers(0, 24, (height, width, 3))
    return np.clip(smooth + noise, 0, 255).astype(np.uint8)


def _encode(fmt, array=None, mode=None, **options):
    image = Image.fromarray(_picture() if array is None else array)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width, height, color_type=2):
    """A valid all-black PNG of `width` x `height`, built without holding its pixels:
    one fully flushed deflate block of 100 rows, repeated (each block stands alone)."""
    channels = {0: 1, 2: 3}[color_type]
    row = bytes(1 + channels * width)  # filter byte 0, then black pixels
    assert height % 100 == 0
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = deflate.compress(row * 100) + deflate.flush(zlib.Z_FULL_FLUSH)
    total = len(row) * height
    adler = ((total % 65521) << 16) | 1  # Adler-32 of `total` zero bytes
    stream = b"\x78\xda" + block * (height // 100) + b"\x03\x00" + struct.pack(">I", adler)
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", stream)
            + _png_chunk(b"IEND", b""))


def _folder(tmp_path, split="val", good=True):
    folder = tmp_path / split / "n01"
    folder.mkdir(parents=True)
    if good:
        (folder / "good.JPEG").write_bytes(_encode("JPEG"))
    return folder


def _run(root, split="val", **options):
    """Evaluates `root/split`: (images, {file name: skip reason}, pipeline)."""
    pipe = fd.load(str(root), split, training=False, batch_size=4, image_size=32, seed=0, **options)
    images = [x.numpy() for x, _ in pipe.dataset]
    skipped = {os.path.basename(n): why for n, why in zip(pipe.skipped.names, pipe.skipped.reasons)}
    return (np.concatenate(images) if images else np.zeros((0, 32, 32, 3))), skipped, pipe


class _Deadline:
    """Fails the test (instead of hanging it) if the block runs past `seconds`."""

    def __init__(self, seconds):
        self.seconds = seconds

    def _expired(self, signum, frame):
        raise TimeoutError(f"still running after {self.seconds} s")

    def __enter__(self):
        self.previous = signal.signal(signal.SIGALRM, self._expired)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *exc):
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.previous)

# ------------------------------------------------------------------------ file contents


# (format, PIL options, how much is cut, expected): "read" or the skip reason.
TRUNCATIONS = [
    ("gif", {}, "half", "truncated"),
    ("gif", {}, "last byte", "read"),  # only the trailer byte lost: the frame is whole
    ("bmp", {}, "half", "truncated"),
    ("bmp", {}, "last byte", "truncated"),
    ("webp", {}, "half", "truncated"),
    ("webp", {}, "last byte", "truncated"),
    ("lossless.webp", {"lossless": True}, "half", "truncated"),
    ("png", {}, "half", "truncated"),
    ("png", {}, "last byte", "truncated"),
    ("jpeg", {}, "half", "truncated"),
    ("jpeg", {}, "last byte", "truncated"),
]


def test_truncated_files_of_every_format_are_skipped_and_reported(tmp_path):
    folder = _folder(tmp_path)
    expected_read = 1 + len({suffix for suffix, *_ in TRUNCATIONS})  # good.JPEG, the whole files
    for suffix, options, cut, expected in TRUNCATIONS:
        data = _encode(suffix.split(".")[-1].upper(), **options)
        (folder / f"whole.{suffix}").write_bytes(data)
        name = f"cut_{cut.replace(' ', '_')}.{suffix}"
        (folder / name).write_bytes(data[: len(data) // 2] if cut == "half" else data[:-1])
        expected_read += expected == "read"
    images, skipped, pipe = _run(tmp_path)
    expected_skips = {f"cut_{c.replace(' ', '_')}.{s}": e for s, _, c, e in TRUNCATIONS if e != "read"}
    assert skipped == expected_skips
    assert len(images) == expected_read == pipe.num_examples - len(expected_skips)
    with pytest.warns(UserWarning, match=r"skipped 10 unreadable file\(s\) of .*cut_half\.gif \(truncated\)"):
        pipe.report_skipped()


def test_every_format_is_decoded_like_pil(tmp_path):
    """The valid files the checks must let through (a JPEG with a 5 KiB trailer
    included), decoded to PIL's pixels."""
    folder = _folder(tmp_path, good=False)
    photo = _picture(40, 40)
    files = {
        "a.bmp": _encode("BMP", photo),
        "b_gray.bmp": _encode("BMP", photo, mode="L"),  # 8-bit, gray colour table
        "c.gif": _encode("GIF", photo),
        "d.png": _encode("PNG", photo),
        "e_lossless.webp": _encode("WEBP", photo, lossless=True),
        "f_plain.JPEG": _encode("JPEG", photo, quality=100),
        "f_trailer.JPEG": _encode("JPEG", photo, quality=100) + bytes(range(256)) * 20,  # 5 KiB
        "g_rgba.bmp": _encode("BMP", photo, mode="RGBA"),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    pipe = fd.load(str(tmp_path), "val", training=False, batch_size=1, image_size=40, crop_pct=1.0, seed=0,
                   mean=(0, 0, 0), std=(1 / 255, 1 / 255, 1 / 255))
    decoded = [x.numpy()[0] for x, _ in pipe.dataset]
    assert pipe.skipped.names == [] and len(decoded) == len(files)
    np.testing.assert_array_equal(decoded[5], decoded[6])  # the JPEG with a trailer: same pixels
    for (name, data), ours in zip(sorted(files.items()), decoded):
        pil = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float64)
        error = np.abs(ours - pil)
        assert error.mean() < (2 if "JPEG" in name else 0.01), name  # libjpeg's IDCT differs a little


def test_variants_tensorflow_cannot_decode_are_skipped_not_misread(tmp_path):
    folder = _folder(tmp_path)
    frames = [Image.fromarray(_picture(seed=k)) for k in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="WEBP", save_all=True, append_images=frames[1:])
    (folder / "animated.webp").write_bytes(buffer.getvalue())
    (folder / "one_bit.bmp").write_bytes(_encode("BMP", mode="1"))
    (folder / "palette.bmp").write_bytes(_encode("BMP", mode="P"))  # TF would read indices as gray
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    (folder / "animated.gif").write_bytes(buffer.getvalue())  # first frame: read
    images, skipped, _ = _run(tmp_path)
    assert skipped == {"animated.webp": fdp.SKIP_REASONS[7], "one_bit.bmp": fdp.SKIP_REASONS[6],
                       "palette.bmp": fdp.SKIP_REASONS[6]}
    assert len(images) == 2

# ------------------------------------------------------------------------ pixel limit


def _header_size_cases():
    jpeg = _encode("JPEG")
    return {
        "jpeg": jpeg,
        "trailer.jpeg": jpeg + bytes(5000),
        "progressive.jpeg": _encode("JPEG", progressive=True),
        "png": _encode("PNG"),
        "gif": _encode("GIF"),
        "bmp": _encode("BMP"),
        "webp": _encode("WEBP"),
        "lossless.webp": _encode("WEBP", lossless=True),
    }


@pytest.mark.parametrize("limit,skipped", [(48 * 64, False), (48 * 64 - 1, True)])
def test_the_pixel_limit_is_read_from_every_header(tmp_path, limit, skipped):
    folder = _folder(tmp_path, good=False)
    cases = _header_size_cases()
    for name, data in cases.items():
        (folder / f"x.{name}").write_bytes(data)
    images, reasons, _ = _run(tmp_path, max_image_pixels=limit)
    assert len(images) == (0 if skipped else len(cases))
    assert reasons == ({f"x.{n}": "over the pixel limit" for n in cases} if skipped else {})


def _reset_peak_rss():
    """Resets this process's peak RSS (Linux: /proc/self/clear_refs); False if unavailable."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _rss_mb(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field)) / 1024


def test_decompression_bombs_are_skipped_before_decoding(tmp_path, record):
    """The issue's PNG (1.1 MB, 20000 x 20000 RGB: 1.2 GB decoded; the old pipeline
    peaked at 9.3 GB on it) and a JPEG whose header claims 12000 x 12000."""
    folder = _folder(tmp_path)
    bomb = png_bomb(20_000, 20_000)
    assert len(bomb) < 1_300_000
    (folder / "bomb.png").write_bytes(bomb)
    jpeg = bytearray(_encode("JPEG"))
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5:sof + 9] = struct.pack(">HH", 12_000, 12_000)
    (folder / "bomb.JPEG").write_bytes(bytes(jpeg))
    _run(tmp_path)  # once, so that the measured run only pays for the files
    measured = _reset_peak_rss()
    before = _rss_mb("VmRSS")
    images, skipped, _ = _run(tmp_path)
    assert skipped == {"bomb.png": "over the pixel limit", "bomb.JPEG": "over the pixel limit"}
    assert len(images) == 1
    if measured:
        growth = _rss_mb("VmHWM") - before
        record("peak RSS growth reading a 20000x20000 PNG bomb (MB)", growth)
        assert growth < 500  # decoding it would take 1200 MB at the very least


# ------------------------------------------------------------------------ listing


def _listing(tmp_path, warning):
    with _Deadline(30), pytest.warns(UserWarning, match=warning):
        source = fd.ImageFolder(tmp_path, "val")
    return source, sorted((os.path.basename(p), why) for p, why in source.skipped)


def test_a_dangling_symlink_is_left_out_and_reported(tmp_path):
    folder = _folder(tmp_path)
    os.symlink(tmp_path / "gone.JPEG", folder / "dangling.JPEG")
    source, skipped = _listing(tmp_path, r"left out 1 entry of .*val while listing: .*dangling\.JPEG \(dangling symlink\)")
    assert source.files == [str(folder / "good.JPEG")] and skipped == [("dangling.JPEG", "dangling symlink")]


def test_a_fifo_named_like_an_image_is_left_out(tmp_path):
    folder = _folder(tmp_path)
    os.mkfifo(folder / "pipe.JPEG")  # reading it would block forever
    source, skipped = _listing(tmp_path, r"pipe\.JPEG \(not a regular file\)")
    assert source.files == [str(folder / "good.JPEG")] and skipped == [("pipe.JPEG", "not a regular file")]


def test_non_utf8_file_names_are_listed_with_their_bytes(tmp_path):
    folder = _folder(tmp_path)
    name = os.path.join(os.fsencode(folder), b"caf\xe9.JPEG")  # a Latin-1 name
    with open(name, "wb") as f:
        f.write(_encode("JPEG"))
    source = fd.ImageFolder(tmp_path, "val")
    names = [item["name"].numpy() for item in source.file_dataset()]
    assert names == [name, os.fsencode(folder / "good.JPEG")]


def test_one_symlink_loop_lists_each_image_once(tmp_path):
    folder = _folder(tmp_path)
    os.symlink(".", folder / "loop")
    source, skipped = _listing(tmp_path, r"loop \(symlink loop")
    assert source.num_examples == 1 and skipped == [("loop", "symlink loop or second link to a folder already listed")]


def test_two_symlink_loops_terminate(tmp_path):
    folder = _folder(tmp_path)
    (folder / "sub").mkdir()
    (folder / "sub" / "inner.JPEG").write_bytes(_encode("JPEG"))
    os.symlink(".", folder / "again")
    os.symlink("..", folder / "sub" / "up")
    os.symlink("sub", folder / "same_sub")  # a second link to a folder: the real one is listed
    source, skipped = _listing(tmp_path, r"left out 3 entries")
    assert source.files == [str(folder / "good.JPEG"), str(folder / "sub" / "inner.JPEG")]
    assert [name for name, _ in skipped] == ["again", "same_sub", "up"]


def test_a_folder_of_every_listing_hazard_reads_what_is_valid(tmp_path):
    """End to end through tf.data: nothing crashes or blocks on read."""
    folder = _folder(tmp_path)
    os.symlink(tmp_path / "gone.JPEG", folder / "dangling.JPEG")
    os.mkfifo(folder / "pipe.JPEG")
    os.symlink(".", folder / "loop")
    os.symlink("..", folder / "up")
    raw = os.fsencode(folder)
    with open(os.path.join(raw, b"caf\xe9.JPEG"), "wb") as f:
        f.write(_encode("JPEG", _picture(seed=5)))
    with open(os.path.join(raw, b"bad\xff.JPEG"), "wb") as f:
        f.write(b"")
    with _Deadline(120), pytest.warns(UserWarning, match="left out 4 entries"):
        images, skipped, pipe = _run(tmp_path)
    assert len(images) == 2 and pipe.num_examples == 3
    assert skipped == {"bad\\xff.JPEG": "empty"}  # named, its byte escaped


def test_an_empty_class_folder_is_a_warning_naming_it(tmp_path):
    _folder(tmp_path, "train")
    (tmp_path / "train" / "n02_empty").mkdir()
    with pytest.warns(UserWarning, match=r"1 class folder\(s\) of .*train hold no images: n02_empty"):
        source = fd.ImageFolder(tmp_path, "train")
    assert source.class_names == ["n01", "n02_empty"] and source.labels == [0]


def test_numeric_class_ids_sort_as_text_with_a_warning(tmp_path):
    for k, name in enumerate(["1", "2", "10"]):
        (tmp_path / "train" / name).mkdir(parents=True)
        (tmp_path / "train" / name / f"{name}.JPEG").write_bytes(_encode("JPEG", _picture(seed=k)))
    with pytest.warns(UserWarning, match=r"numbers, ordered as text .*label 0 is '1', label 1 is '10'"):
        source = fd.ImageFolder(tmp_path, "train")
    # torchvision's ImageFolder order: the sorted folder names (as strings)
    assert source.class_names == sorted(os.listdir(tmp_path / "train")) == ["1", "10", "2"]
    assert {os.path.basename(f): label for f, label in zip(source.files, source.labels)} == {
        "1.JPEG": 0, "10.JPEG": 1, "2.JPEG": 2}
    explicit = fd.ImageFolder(tmp_path, "train", class_names=["1", "2", "10"])  # no warning
    assert explicit.class_names == ["1", "2", "10"] and sorted(explicit.labels) == [0, 1, 2]

# ------------------------------------------------------------------------ label files


def _flat(tmp_path):
    folder = tmp_path / "val"
    folder.mkdir()
    for name in "abc":
        (folder / f"{name}.JPEG").write_bytes(_encode("JPEG"))
    return folder


@pytest.mark.parametrize("content,message", [
    (b"a.JPEG n01\nb.JPEG n02\na.JPEG n01\nc.JPEG n01\n", r"line 3: 'a\.JPEG' was labelled on line 1; this line labels it again"),
    (b"a n01\nb n02\nc n01\na n02\n", r"line 4: 'a' was labelled on line 1; this line gives it class 'n02', line 1 gave 'n01'"),
    (b"a.JPEG n01\nb.JPEG\nc.JPEG n02\n", r"line 2: 'b\.JPEG' is not '<file> <class>'"),
    (b"n01\nn02 extra\nn01\n", r"line 2: 'n02 extra' has 2 fields"),
    (b"a.JPEG n01\nb.JPEG n\xe902\nc.JPEG n01\n", r"line 2: not UTF-8 text \(byte 0xe9 at column 9\)"),
])
def test_bad_label_files_are_errors_naming_the_line(tmp_path, content, message):
    _flat(tmp_path)
    (tmp_path / "labels.txt").write_bytes(content)
    with pytest.raises(fd.DataSourceError, match=r"labels\.txt, " + message):
        fd.ImageFolder(tmp_path, "val", labels_file=str(tmp_path / "labels.txt"))


def test_good_label_files_still_parse(tmp_path):
    _flat(tmp_path)
    csv = b"\xef\xbb\xbfImageId,PredictionString\r\nc,n02 1 2 3 4\r\na,n01 5 6 7 8\r\nzzz,n09 1\r\nb,n02\r\n"
    (tmp_path / "loc.csv").write_bytes(csv)  # BOM, CRLF, a header, a file of another folder
    source = fd.ImageFolder(tmp_path, "val", labels_file=str(tmp_path / "loc.csv"))
    assert source.class_names == ["n01", "n02"] and source.labels == [0, 1, 1]

# ------------------------------------------------------------------------ TFDS


def test_imagenet_without_its_manual_tars_is_a_clear_error(tmp_path, monkeypatch):
    prepared = []
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare",
                        lambda self, **kwargs: prepared.append(kwargs))  # never download
    with pytest.raises(ValueError, match=r"(?s)tfds:imagenet2012\[train\] is not prepared in .* manual "
                       r"directory .*downloads/manual lacks ILSVRC2012_img_train\.tar, "
                       r"ILSVRC2012_img_val\.tar.*image-net\.org.*--manual-dir.*bin/demo"):
        fd.load("imagenet2012", "train", data_dir=str(tmp_path))
    manual = tmp_path / "tars"
    manual.mkdir()
    (manual / "ILSVRC2012_img_train.tar").write_bytes(b"")
    with pytest.raises(ValueError, match=r"tars lacks ILSVRC2012_img_val\.tar:"):
        fd.load("imagenet2012", "train", data_dir=str(tmp_path), manual_dir=str(manual))
    assert prepared == []
    (manual / "ILSVRC2012_img_val.tar").write_bytes(b"")
    source = fd.sources.TFDS("imagenet2012", "train", data_dir=str(tmp_path), manual_dir=str(manual))
    source.prepare()  # the tars are there: TFDS is asked to prepare
    assert len(prepared) == 1


def test_gif_frames_count_toward_the_pixel_limit(tmp_path):
    """giflib unpacks every frame: a GIF of many frames is as large as their sum."""
    folder = _folder(tmp_path, good=False)
    frames = [Image.fromarray(_picture(seed=k)) for k in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    (folder / "animated.gif").write_bytes(buffer.getvalue())
    with Image.open(folder / "animated.gif") as gif:  # the oracle: PIL's frame tiles
        total = 0
        for k in range(gif.n_frames):
            gif.seek(k)
            x0, y0, x1, y1 = gif.tile[0][1]
            total += (x1 - x0) * (y1 - y0)
    assert total > 48 * 64
    for limit, expected in ((total, {}), (total - 1, {"animated.gif": "over the pixel limit"})):
        images, skipped, _ = _run(tmp_path, max_image_pixels=limit)
        assert skipped == expected and len(images) == 1 - len(expected)
