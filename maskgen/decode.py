"""Decode image bytes (as read from object storage) into RGB uint8 arrays, refusing what cannot be trusted.

    rgb = decode_image(data)                      # (H, W, 3) uint8, EXIF orientation applied
    rgb = decode_image(data, max_pixels=20e6)     # refuse anything declaring more pixels

Every failure is a `DecodeError` whose `status` is one of `STATUSES` and whose message a person can
act on; the batch jobs put both into the manifest row of the image.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass

import numpy as np

DEFAULT_MAX_PIXELS = 40_000_000
"""About 7,700 x 5,200: far above any face photo, far below what would exhaust a worker's memory."""

STATUSES = ("empty", "undecodable", "unsupported", "too_large")
EMPTY_FILE = "the file is empty (0 bytes)"

# the names of the formats decoded here: a folder's other files (.txt, Thumbs.db) and hidden ones
# (.DS_Store, macOS's ._photo.jpg) are not read as images (jobs.inputs.FolderLister); a file named in
# an input manifest is read whatever its name. HEIC/HEIF (an iPhone's photos) is listed so that it is
# refused by name as a failure, never passed over as "not an image"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".webp", ".avif", ".gif", ".tif",
                  ".tiff", ".ppm", ".pgm", ".pbm", ".pnm", ".heic", ".heif")
# the brands of HEIF files (ISO/IEC 23008-12) that hold HEVC pictures, which Pillow does not read, and
# of AVIF (AV1 pictures in the same container), which it does; `mif1` is either's general brand
_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1")
_AVIF_BRANDS = (b"avif", b"avis")


def _ftyp_brands(data: bytes) -> set:
    """The major and compatible brands of an ISO media file's leading `ftyp` box (empty if none)."""
    if data[4:8] != b"ftyp":
        return set()
    size = min(int.from_bytes(data[:4], "big"), len(data), 4096)
    return {bytes(data[8:12])} | {bytes(data[i:i + 4]) for i in range(16, size - 3, 4)}


def is_image_name(key: str) -> bool:
    """Whether a file's name is that of an image format decoded here (case-insensitive), and not
    hidden (a leading dot)."""
    name = key.rpartition("/")[2]
    return not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES)
_PIL_LIMIT_LOCK = threading.Lock()


def check_rgb(image, what: str = "image", batch: bool = False) -> np.ndarray:
    """`image` as the RGB uint8 array every stage takes, (H, W, 3) (with `batch`, (N, H, W, 3)),
    else ValueError naming `what`, its type and shape: a float, 16-bit, grey or RGBA array was drawn on
    or embedded as if it were 0..255 RGB, and came out silently wrong (`decode_image` turns any of
    those files into RGB uint8)."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"expected {what} as a NumPy array (RGB uint8), got {type(image).__name__}")
    ndim, shape = (4, "(N, H, W, 3)") if batch else (3, "(H, W, 3)")
    if image.ndim != ndim or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected {what} as RGB uint8 of shape {shape}, got {image.dtype} {image.shape} "
                         "(maskgen.decode.decode_image gives RGB uint8 from any image file)")
    if 0 in image.shape[-3:-1]:  # OpenCV failed on it inside a drawing call
        raise ValueError(f"{what} has no pixels: shape {image.shape}")
    return image


class DecodeError(ValueError):
    """The bytes are not an image we can use. `status` says why, for manifests."""

    def __init__(self, status: str, message: str):
        assert status in STATUSES, status
        super().__init__(message)
        self.status = status


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) declared by the file header, without decoding the pixels."""
    with _open(data, max_pixels=None) as im:
        return im.size


def decode_image(data: bytes, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 background: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """Decode `data` to an RGB uint8 array of shape (H, W, 3).

    - The pixel count declared in the header is checked against `max_pixels` before any pixel is
      decoded, so a decompression bomb costs nothing.
    - EXIF orientation is applied: the array is upright as a person sees the photo.
    - Grayscale is replicated to 3 channels; CMYK (also Adobe's inverted CMYK JPEGs) converted to
      RGB; 16-bit and 32-bit samples scaled to 8 bits; transparency composited over `background`.
    - Animated formats give their first frame.
    """
    return decode_with_source(data, max_pixels=max_pixels, background=background)[0]


@dataclass(frozen=True)
class SourceFormat:
    """What a file's re-encoded output keeps of it (`encode_image`'s `like`):

    - orientation: the EXIF orientation (1 to 8) decoding turned the pixels upright by: 1 when the
      file has none, 0 when its EXIF block cannot be read or the tag is out of range. Outputs are
      written upright and need no tag.
    - grey: the file holds one grey channel (8 or 16 bits, with or without alpha); its output is
      written grey too, not as three equal channels.
    - icc_profile: the file's ICC colour profile, kept so the output's colours read as the input's
      do (a Display P3 phone photo read as sRGB looks washed out). None when the file has none, or
      when the profile is not of the decoded pixels' colour space (a CMYK profile after the
      conversion to RGB).
    """

    orientation: int = 1
    grey: bool = False
    icc_profile: bytes | None = None


WIDE_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")  # 16-bit, 32-bit and float grey
GREY_MODES = ("1", "L", "LA", "La", *WIDE_GREY_MODES)


def decode_with_source(data: bytes, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                       background: tuple[int, int, int] = (255, 255, 255)) -> tuple[np.ndarray, SourceFormat]:
    """`decode_image`'s array and the file's `SourceFormat`, from one parse of the file: a writer
    that may keep the file as it is, or re-encodes it in kind, needs both, and parsing the header
    again cost as much as decoding a small image."""
    from PIL import Image, ImageOps

    from maskgen.checks import check_colour

    background = check_colour(background, "background")  # before the file is read
    if max_pixels is not None and (isinstance(max_pixels, (bool, np.bool_))
                                   or not isinstance(max_pixels, (int, float, np.number))
                                   or (isinstance(max_pixels, (float, np.floating)) and not np.isfinite(max_pixels))
                                   or max_pixels <= 0):  # (isfinite of an int past 2**64 raised TypeError)
        raise ValueError(f"max_pixels is a positive number of pixels or None, got {max_pixels!r}")  # nan: no limit
    with _open(data, max_pixels=max_pixels) as im:
        try:
            im.seek(0)
            im.load()
            upright = ImageOps.exif_transpose(im)
            # read after the transpose, which has loaded the EXIF block (or failed above): read
            # first, a corrupt block would be marked loaded and the transpose would no longer fail
            grey = im.mode in GREY_MODES
            # a transparent colour (PNG tRNS) is matched only in 8-bit files: Pillow gives 1-, 2- and
            # 16-bit samples scaled or cut to 8 bits and their tRNS value as stored
            eight_bit_png = data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 24 and data[24] == 8
            return _to_rgb(upright, background, eight_bit_png), SourceFormat(_orientation(im), grey, _profile(im, grey))
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise DecodeError("undecodable", f"image data is corrupt or truncated ({_reason(exc)})") from None


def _profile(im, grey: bool) -> bytes | None:
    """The file's ICC profile if it describes the decoded pixels: an RGB profile for colour pixels
    (RGB, RGBA, a palette), a grey one for grey; the colour space is bytes 16 to 20 of its header."""
    profile = im.info.get("icc_profile")
    if not isinstance(profile, bytes) or len(profile) < 128:
        return None
    space = profile[16:20]
    keep = space == b"GRAY" if grey else (space == b"RGB " and im.mode in ("RGB", "RGBA", "RGBX", "P", "PA"))
    return profile if keep else None


def _orientation(im) -> int:
    try:
        value = im.getexif().get(0x0112, 1)
    except Exception:  # a corrupt EXIF block is Pillow's error of the day: unknown, never a crash
        return 0
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else 0


# the formats whose Pillow writer embeds an ICC profile, written as cv2 writes them without one:
# JPEG 4:2:0 at the quality asked for, WebP lossless (cv2's WebP without a quality)
_PROFILE_WRITERS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}


def encode_image(rgb: np.ndarray, ext: str, jpeg_quality: int = 95, like: SourceFormat | None = None) -> bytes:
    """RGB uint8 array -> bytes of the format `ext` names (".jpg", ".png", ...); the inverse of
    `decode_image` for writing outputs. `like` (the input's `SourceFormat`) writes the output in kind:
    one grey channel (the luma of `rgb`) for a grey input, and the input's ICC profile where the
    format holds one (JPEG, PNG, WebP)."""
    import cv2

    ext = ext.lower()  # a camera's IMG_1234.JPG is a JPEG too
    grey = like is not None and like.grey
    pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if grey else rgb
    profile = like.icc_profile if like is not None else None
    if profile is not None and ext in _PROFILE_WRITERS:
        from PIL import Image

        fmt = _PROFILE_WRITERS[ext]
        options = {"JPEG": {"quality": int(jpeg_quality), "subsampling": "4:2:0"},
                   "WEBP": {"lossless": True}}.get(fmt, {})
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format=fmt, icc_profile=profile, **options)
        return buf.getvalue()
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, pixels if grey else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise RuntimeError(f"could not encode {ext}")
    return buf.tobytes()


# the first bytes of each supported format: data that starts so is that format, however damaged
_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*")
_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
    *((sig, "TIFF") for sig in _TIFF_SIGNATURES),
)


def _cut_short(data: bytes) -> str | None:
    """The format of data that Pillow could not name but that is a supported format cut short (a
    TIFF keeps its directory at the end, a GIF its palette up front, a BMP says its own size), else
    None: a format we do not read, or a whole TIFF of a pixel layout Pillow does not read."""
    head = bytes(data[:14])
    if head[:2] == b"BM" and len(head) >= 10 and head[6:10] == b"\0\0\0\0":  # the header's reserved zeros
        return "BMP" if len(data) < max(int.from_bytes(head[2:6], "little"), 14) else None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if _ftyp_brands(data) & set(_AVIF_BRANDS):
        return "AVIF"
    fmt = next((fmt for sig, fmt in _SIGNATURES if head.startswith(sig)), None)
    if fmt == "TIFF":  # whole, its first directory (offset at byte 4) is there; else cut short
        first = int.from_bytes(head[4:8], "little" if head[:2] == b"II" else "big")
        return "TIFF" if len(data) < first + 2 else None
    return fmt


def _open(data: bytes, max_pixels: int | None):
    from PIL import Image, UnidentifiedImageError

    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"decode_image takes bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise DecodeError("empty", EMPTY_FILE)
    try:
        # Our own limit below replaces Pillow's process-wide one, which would refuse (or warn about)
        # sizes before we can say what they are; the lock keeps the swap invisible to our threads.
        with _PIL_LIMIT_LOCK:
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                im = Image.open(io.BytesIO(bytes(data)))
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except UnidentifiedImageError:
        head = bytes(data[:8])
        fmt = _cut_short(data)
        if fmt is not None:
            raise DecodeError(
                "undecodable", f"{fmt} data ({len(data)} bytes) that cannot be read: truncated or corrupt"
            ) from None
        if _ftyp_brands(data) & set(_HEIF_BRANDS):  # (an AVIF, whose brands say so, was named above)
            raise DecodeError("unsupported", f"a HEIC/HEIF image ({len(data)} bytes), which is not read here: "
                                             "convert it to JPEG or PNG (e.g. libheif's heif-convert)") from None
        if head[:4] in _TIFF_SIGNATURES:
            raise DecodeError("unsupported", f"a whole TIFF ({len(data)} bytes) whose pixel layout (bits and samples "
                                             "per pixel) we cannot read; convert it to PNG") from None
        raise DecodeError(
            "unsupported",
            f"not an image format we can read ({len(data)} bytes starting {head!r}); "
            "JPEG, PNG, WebP, AVIF, BMP, TIFF, GIF and PNM are supported",
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DecodeError("undecodable", f"image header is corrupt ({_reason(exc)})") from None
    width, height = im.size
    if width <= 0 or height <= 0:
        im.close()
        raise DecodeError("undecodable", f"image declares an empty size {width}x{height}")
    if max_pixels is not None and width * height > max_pixels:
        im.close()
        raise DecodeError(
            "too_large",
            f"image declares {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{int(max_pixels):,} (raise max_pixels, or --max-pixels of the mfr commands, if this is a genuine photo)",
        )
    return im


def _to_rgb(im, background: tuple[int, int, int], colour_key: bool = False) -> np.ndarray:
    from PIL import Image

    mode = im.mode
    if mode in WIDE_GREY_MODES:
        arr = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        top = float(arr.max(initial=0))
        # the full scale the samples are written to: 16 bits, 8 bits stored wide, a float image in 0..1
        # (it read black), or, past 16 bits, the image's own maximum (a 32-bit one clipped to white)
        peak = 65535.0 if mode.startswith("I;16") else \
            1.0 if mode == "F" and top <= 1.0 else 255.0 if top <= 255 else 65535.0 if top <= 65535 else top
        gray = np.clip(arr * (255.0 / peak) + 0.5, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if mode == "P" and "transparency" in im.info or mode in ("L", "RGB") and colour_key and "transparency" in im.info:
        im = im.convert("RGBA")  # a palette's, or an 8-bit grey or RGB PNG's tRNS colour (it stayed as stored)
    elif mode == "P":
        im = im.convert("RGB")
    elif mode in ("LA", "La", "PA", "RGBa"):
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        canvas = Image.new("RGB", im.size, background)
        canvas.paste(im, mask=im.getchannel("A"))
        im = canvas
    elif im.mode != "RGB":
        im = im.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
    return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
