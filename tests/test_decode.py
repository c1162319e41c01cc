"""Decoding bytes from storage: every odd format handled, every bad file refused with a clear status."""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image

from maskgen.decode import DecodeError, decode_image, decode_with_source, image_size


def _rgb(h=60, w=80):
    """An asymmetric test picture: orientation mistakes change it."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), ((x // 10 + y // 10) % 2) * 200], axis=2).astype(np.uint8)


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def test_rgb_png_round_trips_exactly():
    arr = _rgb()
    out = decode_image(_encode(Image.fromarray(arr), "PNG"))
    assert out.dtype == np.uint8 and out.shape == (60, 80, 3)
    np.testing.assert_array_equal(out, arr)


def test_jpeg_decodes_close_to_source():
    arr = _rgb()
    out = decode_image(_encode(Image.fromarray(arr), "JPEG", quality=95, subsampling=0))
    assert np.abs(out.astype(int) - arr).mean() < 6


def test_grayscale_becomes_three_equal_channels():
    gray = _rgb()[:, :, 0]
    out = decode_image(_encode(Image.fromarray(gray, "L"), "PNG"))
    assert out.shape == (60, 80, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray)


def test_alpha_is_composited_over_the_background():
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:5, :, 3] = 255  # top half opaque red, bottom half transparent
    data = _encode(Image.fromarray(rgba, "RGBA"), "PNG")
    out = decode_image(data)
    np.testing.assert_array_equal(out[0, 0], [200, 0, 0])
    np.testing.assert_array_equal(out[9, 9], [255, 255, 255])
    np.testing.assert_array_equal(decode_image(data, background=(0, 0, 0))[9, 9], [0, 0, 0])
    # a background that is not a colour: refused (-1 was clamped to 0, "red" taken, (0,) read as black)
    for wrong in ((300, -1, 0), (0,), "red", (0.5, 0, 0), None):
        with pytest.raises(ValueError, match=r"background is three whole numbers from 0 to 255 \(R, G, B\)"):
            decode_image(data, background=wrong)
    la = Image.fromarray(rgba[..., [0, 3]], "LA")
    assert decode_image(_encode(la, "PNG"))[9, 9].tolist() == [255, 255, 255]


def test_palette_with_transparency():
    im = Image.fromarray(_rgb()).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    data = _encode(im, "PNG", transparency=0)
    out = decode_image(data)
    assert out.shape == (60, 80, 3) and out.dtype == np.uint8


def test_16_bit_gray_and_rgb_are_scaled_to_8_bits():
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    out = decode_image(_encode(Image.fromarray(ramp), "PNG"))
    np.testing.assert_allclose(out[..., 0].astype(int), np.round(ramp / 65535 * 255), atol=1)
    import cv2

    rgb16 = (np.random.default_rng(0).integers(0, 65536, (8, 8, 3))).astype(np.uint16)
    ok, png = cv2.imencode(".png", rgb16[:, :, ::-1])
    out = decode_image(png.tobytes())
    np.testing.assert_allclose(out.astype(int), rgb16 >> 8, atol=1)


def test_cmyk_jpeg_is_converted_to_rgb():
    arr = _rgb()
    cmyk = Image.fromarray(arr).convert("CMYK")
    out = decode_image(_encode(cmyk, "JPEG", quality=95, subsampling=0))
    assert out.shape == (60, 80, 3)
    assert np.abs(out.astype(int) - arr).mean() < 10


@pytest.mark.parametrize("orientation, undo", [(3, lambda a: np.rot90(a, 2)), (6, lambda a: np.rot90(a, 1)),
                                               (8, lambda a: np.rot90(a, -1))])
def test_exif_orientation_is_applied(orientation, undo):
    upright = _rgb()
    stored = np.ascontiguousarray(undo(upright))  # what a camera writes before tagging the rotation
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _encode(Image.fromarray(stored), "PNG", exif=exif)
    out = decode_image(data)
    np.testing.assert_array_equal(out, upright)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("orientation", [None, 1, 2, 3, 4, 5, 6, 7, 8, 9])
def test_decoding_says_which_orientation_it_applied(fmt, orientation):
    """What a job keeps a file as it is by (jobs.augment.image_file): the orientation the one parse
    of the file applied (1 without a tag, 0 for a tag out of range), and `decode_image`'s pixels."""
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    data = _encode(Image.fromarray(_rgb()), fmt, exif=exif.tobytes())
    image, source = decode_with_source(data)
    applied = source.orientation
    assert applied == {None: 1, 9: 0}.get(orientation, orientation)
    np.testing.assert_array_equal(image, decode_image(data))
    assert image.shape == ((80, 60, 3) if applied in (5, 6, 7, 8) else (60, 80, 3))


def test_animated_gif_gives_its_first_frame():
    frames = [Image.fromarray(np.full((20, 30, 3), v, np.uint8)) for v in (10, 240)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    out = decode_image(buf.getvalue())
    assert out.shape == (20, 30, 3) and out.max() < 50


def test_avif_decodes_and_heic_is_refused_by_name():
    """AVIF (Pillow reads it) was passed over in folders as "not an image"; HEIC, an iPhone's photo
    format that Pillow does not read, said "not an image format we can read (... starting
    b'\\x00\\x00\\x00\\x18ftypheic')": it is named, with what to do."""
    from PIL import features

    if not features.check("avif"):
        pytest.fail("this Pillow reads no AVIF: pyproject asks for one whose wheels do")
    arr = _rgb(64, 96)
    out = decode_image(_encode(Image.fromarray(arr), "AVIF", quality=95))
    # the two smooth gradients (a turned or channel-swapped image fails); the checkerboard is lossy
    assert out.shape == arr.shape and np.abs(out[..., :2].astype(int) - arr[..., :2]).mean() < 4
    data = _encode(Image.fromarray(arr), "AVIF", quality=95)
    # cut short, also under the general brand `mif1` (its other brands say AVIF): damaged, not a format
    # we do not read, nor a HEIC
    for cut in (data[:len(data) // 2], data[:40], data[:8] + b"mif1" + data[12:len(data) // 2]):
        with pytest.raises(DecodeError, match="AVIF data .* truncated or corrupt") as info:
            decode_image(cut)
        assert info.value.status == "undecodable"
    box = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"  # an iPhone photo's first box
    for brand in (b"heic", b"mif1"):
        with pytest.raises(DecodeError, match="a HEIC/HEIF image .* convert it to JPEG") as info:
            decode_image(box.replace(b"heic", brand, 1) + bytes(3000))
        assert info.value.status == "unsupported"


def test_one_pixel_image():
    assert decode_image(_encode(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG")).tolist() == [[[1, 2, 3]]]


@pytest.mark.parametrize("data, status, words", [
    (b"", "empty", "empty"),
    (np.random.default_rng(0).bytes(5000), "unsupported", "not an image format"),
    (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "unsupported", "not an image format"),
    (b"name,identity\nx.jpg,1\n", "unsupported", "not an image format"),
])
def test_non_images_are_refused_with_a_status(data, status, words):
    with pytest.raises(DecodeError, match=words) as info:
        decode_image(data)
    assert info.value.status == status


def test_truncated_jpeg_is_undecodable():
    data = _encode(Image.fromarray(_rgb(200, 200)), "JPEG", quality=90)
    with pytest.raises(DecodeError, match="corrupt or truncated") as info:
        decode_image(data[: len(data) // 2])
    assert info.value.status == "undecodable"


@pytest.mark.parametrize("fmt, options", [("TIFF", {"compression": "tiff_lzw"}), ("TIFF", {"compression": "tiff_deflate"}), ("GIF", {})])
def test_truncated_file_of_a_known_format_is_undecodable_not_unsupported(fmt, options):
    # a compressed TIFF keeps its directory at the end and a GIF its palette up front: cut short,
    # Pillow cannot name the format at all, yet the file is a damaged image, not an unknown format
    data = _encode(Image.fromarray(_rgb(200, 200)), fmt, **options)
    cut = len(data) * 9 // 10 if fmt == "TIFF" else 20
    with pytest.raises(DecodeError, match=f"{fmt} data .* truncated or corrupt") as info:
        decode_image(data[:cut])
    assert info.value.status == "undecodable"


def test_a_whole_tiff_of_a_layout_pillow_cannot_read_is_unsupported_and_a_cut_bmp_undecodable():
    """A complete 32-bit float RGB TIFF was called "truncated or corrupt" by the check above (a
    damaged file to look for); it is a layout we do not read. A BMP cut inside its header said "not an
    image format we can read"."""
    def entry(tag, kind, count, value):
        return struct.pack("<HHII", tag, kind, count, value)

    pixels = np.linspace(0, 1, 4 * 4 * 3, dtype="<f4").tobytes()
    entries = [entry(256, 3, 1, 4), entry(257, 3, 1, 4), entry(258, 3, 1, 32), entry(259, 3, 1, 1),
               entry(262, 3, 1, 2), entry(273, 4, 1, 8), entry(277, 3, 1, 3), entry(278, 3, 1, 4),
               entry(279, 4, 1, len(pixels)), entry(339, 3, 1, 3)]  # 3 samples of 32-bit floats
    ifd = struct.pack("<H", len(entries)) + b"".join(entries) + b"\0\0\0\0"
    data = b"II*\x00" + struct.pack("<I", 8 + len(pixels)) + pixels + ifd
    with pytest.raises(DecodeError, match="a whole TIFF .* whose pixel layout") as info:
        decode_image(data)
    assert info.value.status == "unsupported"
    bmp = _encode(Image.fromarray(_rgb(20, 20)), "BMP")
    assert decode_image(bmp).shape == (20, 20, 3)
    with pytest.raises(DecodeError, match="BMP data .* truncated or corrupt") as info:
        decode_image(bmp[:12])
    assert info.value.status == "undecodable"


def test_decompression_bomb_is_refused_before_decoding():
    # A real PNG header declaring 30000 x 30000 RGB with a tiny (invalid) body: decoding it would
    # need 2.7 GB; refusing must cost neither time nor memory.
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 100)) \
        + _png_chunk(b"IEND", b"")
    assert image_size(data) == (30000, 30000)
    tracemalloc.start()
    started = time.process_time()  # this process's CPU (the other test process shares the cores)
    with pytest.raises(DecodeError, match="900,000,000 pixels") as info:
        decode_image(data)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert info.value.status == "too_large"
    assert time.process_time() - started < 1.0 and peak < 10_000_000


def test_pixel_limit_is_configurable():
    data = _encode(Image.fromarray(_rgb(100, 100)), "PNG")
    with pytest.raises(DecodeError) as info:
        decode_image(data, max_pixels=9_999)
    assert info.value.status == "too_large" and "raise max_pixels" in str(info.value)
    assert decode_image(data, max_pixels=10_000).shape == (100, 100, 3)
    assert decode_image(data, max_pixels=None).shape == (100, 100, 3)


def test_non_bytes_input_is_a_type_error():
    with pytest.raises(TypeError, match="takes bytes"):
        decode_image("photo.jpg")


def test_decoding_says_what_the_output_keeps_grey_and_the_colour_profile():
    """`SourceFormat`: a grey file is grey (8 or 16 bits); an RGB profile is kept with RGB pixels and a
    grey one with grey; a CMYK file's profile is not, its pixels having been converted to RGB; and
    `encode_image(like=...)` writes the output in kind."""
    from PIL import ImageCms

    from maskgen.decode import encode_image

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    cmyk_profile = srgb[:16] + b"CMYK" + srgb[20:]  # the header's colour space is what is checked
    grey_profile = srgb[:16] + b"GRAY" + srgb[20:]
    rgb = _rgb()
    cases = {
        "rgb jpeg": (_encode(Image.fromarray(rgb), "JPEG", icc_profile=srgb), False, srgb),
        "rgb png, none": (_encode(Image.fromarray(rgb), "PNG"), False, None),
        "grey png": (_encode(Image.fromarray(rgb[..., 0]), "PNG", icc_profile=grey_profile), True, grey_profile),
        "16-bit grey": (_encode(Image.fromarray(rgb[..., 0].astype(np.uint16) * 257), "PNG"), True, None),
        "cmyk jpeg": (_encode(Image.fromarray(rgb).convert("CMYK"), "JPEG", icc_profile=cmyk_profile), False, None),
        "grey, rgb profile": (_encode(Image.fromarray(rgb[..., 0]), "PNG", icc_profile=srgb), True, None),
    }
    for name, (data, grey, profile) in cases.items():
        image, source = decode_with_source(data)
        assert (source.grey, source.icc_profile) == (grey, profile), name
        for ext in (".jpg", ".png"):
            written = Image.open(io.BytesIO(encode_image(image, ext, like=source)))
            assert written.mode == ("L" if grey else "RGB"), (name, ext)
            assert written.info.get("icc_profile") == profile, (name, ext)
    # a camera's upper-case name is the same format: IMG_1234.JPG kept its profile only as .jpg
    image, source = decode_with_source(cases["rgb jpeg"][0])
    for ext in (".JPG", ".JPEG", ".PNG", ".WEBP"):
        assert Image.open(io.BytesIO(encode_image(image, ext, like=source))).info.get("icc_profile") == srgb, ext
    # without `like`, as before: RGB, no profile, cv2's bytes
    assert Image.open(io.BytesIO(encode_image(rgb, ".png"))).mode == "RGB"


def test_float_and_32_bit_grey_are_scaled_by_their_range_and_a_nan_pixel_limit_is_refused():
    """A float image in 0..1 read black (scaled as if 0..255), and a 32-bit one past 16 bits was
    clipped to white; `max_pixels=nan` turned the limit off."""
    ramp = np.linspace(0, 1, 4 * 256, dtype=np.float32).reshape(4, 256)
    out = decode_image(_encode(Image.fromarray(ramp, mode="F"), "TIFF"))
    assert out[..., 0].min() == 0 and out[..., 0].max() == 255 and len(np.unique(out)) > 200
    wide = np.linspace(0, 1_000_000, 4 * 256).astype(np.int32).reshape(4, 256)
    out = decode_image(_encode(Image.fromarray(wide, mode="I"), "TIFF"))
    assert (out == 255).mean() < 0.01 and out.max() == 255 and len(np.unique(out)) > 200
    data = _encode(Image.fromarray(_rgb()), "PNG")
    for bad in (float("nan"), 0, -1, "40e6", True):
        with pytest.raises(ValueError, match="max_pixels"):
            decode_image(data, max_pixels=bad)
    for huge in (10**20, np.int64(2**62), float("1e30")):  # no limit to speak of (isfinite raised on 10**20)
        assert decode_image(data, max_pixels=huge).shape == (60, 80, 3)


def test_a_grey_or_rgb_pngs_transparent_colour_is_composited_like_alpha():
    """A tRNS colour in a grey or RGB PNG (no alpha channel) stayed as stored (black here), where RGBA,
    LA and palette transparency were composited over the background."""
    import io

    from PIL import Image

    for mode, black, lit in (("L", 0, 200), ("RGB", (0, 0, 0), (200, 10, 10))):
        image = Image.new(mode, (4, 4), black)
        image.putpixel((0, 0), lit)
        data = io.BytesIO()
        image.save(data, "PNG", transparency=black)
        rgb = decode_image(data.getvalue())
        assert rgb[1, 1].tolist() == [255, 255, 255], mode
        assert rgb[0, 0].tolist() == ([200] * 3 if mode == "L" else [200, 10, 10]), mode
