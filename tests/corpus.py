"""A hostile corpus, generated at test time (never committed): real face photos in every odd format
and under awkward names, mixed with files that are not usable images. `build_corpus` writes it and
returns the status the jobs must give each file."""

from __future__ import annotations

import io
import struct
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
from lfw_like import largest_reference_faces, lfw_crop  # noqa: E402

GOOD = "ok"


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def bomb_png() -> bytes:
    """A real PNG header declaring 30000 x 30000 pixels (2.7 GB decoded) with a tiny body."""
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 100))
            + _png_chunk(b"IEND", b""))


def _save(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def twenty_faces(shared_data: Path) -> np.ndarray:
    """A 5 x 4 grid of 20 LFW-style crops (faces about 70 px) of the shared photos."""
    from maskgen.decode import decode_image

    boxes = largest_reference_faces("faces")
    tiles = []
    for rel in sorted(boxes)[::2][:20]:
        tiles.append(lfw_crop(decode_image((shared_data / rel).read_bytes()), boxes[rel], size=160))
    rows = [np.concatenate(tiles[r * 5:(r + 1) * 5], axis=1) for r in range(4)]
    return np.concatenate(rows, axis=0)


def build_corpus(root: Path, photos: list[Path], shared_data: Path) -> dict[str, str]:
    """Write the corpus under `root`; returns key -> the status every job must record for it."""
    from maskgen.decode import decode_image

    def put(key: str, data: bytes, status: str):
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        expected[key] = status

    expected: dict[str, str] = {}
    rgb = [decode_image(p.read_bytes()) for p in photos[:6]]
    put("people/José Ñúñez/portrait one.jpg", photos[0].read_bytes(), GOOD)
    put("people/白敬亭/照片.jpg", photos[1].read_bytes(), GOOD)
    put("people/odd/a;b $(echo x) & 'q' \"r\".jpg", photos[2].read_bytes(), GOOD)

    rgba = np.dstack([rgb[3], np.full(rgb[3].shape[:2], 255, np.uint8)])
    rgba[:20, :20, 3] = 0  # a transparent corner
    put("formats/alpha.png", _save(Image.fromarray(rgba, "RGBA"), "PNG"), GOOD)
    ok, sixteen = cv2.imencode(".png", cv2.cvtColor(rgb[4], cv2.COLOR_RGB2BGR).astype(np.uint16) * 257)
    assert ok
    put("formats/sixteen-bit.png", sixteen.tobytes(), GOOD)
    put("formats/gray.png", _save(Image.fromarray(rgb[5]).convert("L"), "PNG"), GOOD)
    put("formats/cmyk.jpg", _save(Image.fromarray(rgb[0]).convert("CMYK"), "JPEG", quality=92), GOOD)
    exif = Image.Exif()
    exif[0x0112] = 6  # the stored pixels are the upright photo turned 90 degrees counter-clockwise
    put("formats/exif-rotated.jpg", _save(Image.fromarray(np.ascontiguousarray(np.rot90(rgb[1], 1))), "JPEG",
                                          quality=92, exif=exif), GOOD)
    frames = [Image.fromarray(rgb[2]), Image.fromarray(255 - rgb[2])]
    put("formats/animated.gif", _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100), GOOD)

    put("bad/zero-bytes.jpg", b"", "empty")
    full = photos[3].read_bytes()
    put("bad/truncated.jpg", full[: len(full) // 3], "undecodable")
    put("bad/random-bytes.jpg", np.random.default_rng(0).bytes(4000), "unsupported")
    put("bad/one-pixel.png", _save(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"), "no_face")
    put("bad/bomb.png", bomb_png(), "too_large")
    put("bad/document.pdf", b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n", "not_an_image")
    put("bad/.DS_Store", b"\x00\x00\x00\x01Bud1" + bytes(64), "not_an_image")

    y, x = np.mgrid[0:240, 0:320]
    gradient = np.dstack([x * 255 // 319, y * 255 // 239, np.full_like(x, 128)]).astype(np.uint8)
    put("scenes/no-face.png", _save(Image.fromarray(gradient), "PNG"), "no_face")
    ok, crowd = cv2.imencode(".jpg", cv2.cvtColor(twenty_faces(shared_data), cv2.COLOR_RGB2BGR))
    assert ok
    put("scenes/twenty-faces.jpg", crowd.tobytes(), GOOD)
    return expected
