"""histaug.images: every Pillow mode made in tmp_path, converted as documented or rejected loudly."""
from __future__ import annotations

import itertools
import struct
from io import BytesIO

import numpy as np
import pytest
from PIL import Image, ImageCms

from histaug import data
from histaug.images import UnsupportedImage, read_rgb, summarize_conversions, to_rgb
from histaug.utils import PipelineError

SIZE = (96, 96)


def grey16() -> np.ndarray:
    """96x96 uint16 ramp covering 0..65535, including values that a clip to 255 would turn white."""
    v = np.linspace(0, 65535, SIZE[0] * SIZE[1]).round().astype(np.uint16).reshape(SIZE)
    v[0, :4] = [0, 128, 129, 65535]  # round(128/257) = 0, round(129/257) = 1
    return v


def expected8(v: np.ndarray) -> np.ndarray:
    return np.array([[round(int(x) / 257) for x in row] for row in v], dtype=np.uint8)


def associated_alpha_tiff(path, mode: str, colour) -> None:
    """A TIFF whose alpha is marked associated (ExtraSamples = 1): Pillow opens LA data as La."""
    Image.new(mode, SIZE, colour).save(path)
    raw = bytearray(path.read_bytes())
    entry = struct.pack("<HHI", 338, 3, 1) + struct.pack("<HH", 2, 0)  # ExtraSamples = 2 (unassociated)
    at = raw.find(entry)
    assert at > 0
    raw[at + 8:at + 10] = struct.pack("<H", 1)
    path.write_bytes(bytes(raw))


def inverted_grey_cmyk_profile() -> bytes:
    """A minimal ICC v2 CMYK printer profile (lut8 A2B0, PCS Lab) mapping ink coverage to lightness:
    no ink = black, full ink = white, i.e. the opposite of what the naive CMYK formula does."""
    def s15(x):
        return struct.pack(">i", int(round(x * 65536)))

    text = b"inverted grey\x00"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(8) + bytes(3) + bytes(67)
    wtpt = b"XYZ " + bytes(4) + s15(0.9642) + s15(1.0) + s15(0.8249)
    cprt = b"text" + bytes(4) + b"none\x00"
    lut = b"mft1" + bytes(4) + bytes([4, 3, 2, 0]) + b"".join(s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
    lut += bytes(range(256)) * 4
    for corner in itertools.product((0, 1), repeat=4):  # L = 100 x mean ink, a = b = 0
        lut += bytes([round(sum(corner) / 4 * 255), 128, 128])
    lut += bytes(range(256)) * 3
    tags = [(b"desc", desc), (b"wtpt", wtpt), (b"cprt", cprt), (b"A2B0", lut)]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for sig, content in tags:
        body += b"\x00" * (-(offset + len(body)) % 4)
        table += sig + struct.pack(">II", offset + len(body), len(content))
        body += content
    header = struct.pack(">I", offset + len(body)) + bytes(4) + struct.pack(">I", 0x02100000) + b"prtr" + b"CMYK"
    header += b"Lab " + bytes(12) + b"acsp" + bytes(28) + s15(0.9642) + s15(1.0) + s15(0.8249) + bytes(48)
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


def test_rgb_is_returned_as_is(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, SIZE + (3,), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "x.png")
    arr, note = read_rgb(tmp_path / "x.png")
    assert note is None and arr.dtype == np.uint8 and np.array_equal(arr, a)


def test_bilevel_and_grey_are_replicated(tmp_path):
    g = np.random.default_rng(1).integers(0, 256, SIZE, dtype=np.uint8)
    Image.fromarray(g).save(tmp_path / "g.png")
    arr, note = read_rgb(tmp_path / "g.png")
    assert np.array_equal(arr, np.stack([g] * 3, -1)) and note.startswith("L ")

    bits = g > 127
    Image.fromarray(bits).save(tmp_path / "b.png")
    assert Image.open(tmp_path / "b.png").mode == "1"
    arr, note = read_rgb(tmp_path / "b.png")
    assert np.array_equal(arr, np.stack([np.where(bits, 255, 0)] * 3, -1).astype(np.uint8)) and note.startswith("1 ")


@pytest.mark.parametrize("ext, opened_as", [("png", "I;16"), ("tif", "I;16")])
def test_16bit_grey_is_scaled_not_clipped(tmp_path, ext, opened_as):
    v = grey16()
    Image.fromarray(v).save(tmp_path / f"g16.{ext}")
    assert Image.open(tmp_path / f"g16.{ext}").mode == opened_as  # what this Pillow opens 16-bit grey as
    arr, note = read_rgb(tmp_path / f"g16.{ext}")
    want = expected8(v)
    assert np.array_equal(arr, np.stack([want] * 3, -1))
    assert arr[0, :4, 0].tolist() == [0, 0, 1, 255]
    assert (arr[..., 0] < 255).mean() > 0.9  # not the all-white result of a clip to 255
    assert note == f"{opened_as} (16-bit grey scaled to 8 bit)"


def test_16bit_big_endian_tiff_and_mode_I_from_16bit_sources(tmp_path):
    v = grey16()
    Image.frombytes("I;16B", SIZE, v.astype(">u2").tobytes()).save(tmp_path / "b.tif")
    assert Image.open(tmp_path / "b.tif").mode == "I;16B"
    arr, note = read_rgb(tmp_path / "b.tif")
    assert np.array_equal(arr[..., 1], expected8(v)) and note.startswith("I;16B ")

    # A 16-bit PGM opens as mode I (older Pillow also opened 16-bit PNGs as I)
    (tmp_path / "g.pgm").write_bytes(b"P5\n96 96\n65535\n" + v.astype(">u2").tobytes())
    assert Image.open(tmp_path / "g.pgm").mode == "I"
    arr, note = read_rgb(tmp_path / "g.pgm")
    assert np.array_equal(arr[..., 2], expected8(v)) and note == "I (16-bit grey scaled to 8 bit)"


def test_rgba_is_composited_on_white(tmp_path):
    a = np.zeros(SIZE + (4,), np.uint8)
    a[..., :3] = (200, 40, 0)
    a[:32, :, 3] = 0      # transparent -> white
    a[32:64, :, 3] = 255  # opaque -> the colour
    a[64:, :, 3] = 128    # half -> blend with white
    Image.fromarray(a, "RGBA").save(tmp_path / "a.png")
    arr, note = read_rgb(tmp_path / "a.png")
    assert (arr[:32] == 255).all()
    assert (arr[32:64] == (200, 40, 0)).all()
    half = [round(255 - (255 - c) * 128 / 255) for c in (200, 40, 0)]
    assert (arr[64:] == half).all() and half == [227, 147, 127]
    assert note == "RGBA (alpha composited on white)"


def test_grey_alpha_la_and_premultiplied_la(tmp_path):
    Image.new("LA", SIZE, (100, 128)).save(tmp_path / "la.png")
    arr, note = read_rgb(tmp_path / "la.png")
    assert (arr == round(255 - 155 * 128 / 255)).all() and note.startswith("LA ")

    associated_alpha_tiff(tmp_path / "pla.tif", "LA", (50, 128))
    assert Image.open(tmp_path / "pla.tif").mode == "La"
    arr, note = read_rgb(tmp_path / "pla.tif")
    assert (arr == 50 + 255 - 128).all() and note.startswith("La ")


def test_premultiplied_rgba_in_memory():
    # no file format opens as RGBa (Pillow un-premultiplies associated-alpha TIFFs to RGBA)
    im = Image.frombytes("RGBa", SIZE, bytes([60, 30, 0, 128]) * (SIZE[0] * SIZE[1]))
    arr, note = to_rgb(im)
    assert (arr == (60 + 127, 30 + 127, 127)).all() and note.startswith("RGBa ")


def test_palette_with_and_without_transparency(tmp_path):
    pal = [255, 0, 0, 0, 0, 255] + [0] * 762
    p = Image.new("P", SIZE, 0)
    p.putpalette(pal)
    p.paste(1, (0, 0, 96, 48))
    p.save(tmp_path / "p.png")
    arr, note = read_rgb(tmp_path / "p.png")
    assert (arr[:48] == (0, 0, 255)).all() and (arr[48:] == (255, 0, 0)).all() and note == "P (palette to RGB)"

    p.info["transparency"] = 0  # palette entry 0 (red) transparent
    p.save(tmp_path / "pt.png")
    assert "transparency" in Image.open(tmp_path / "pt.png").info
    arr, note = read_rgb(tmp_path / "pt.png")
    assert (arr[:48] == (0, 0, 255)).all() and (arr[48:] == 255).all() and "composited on white" in note

    pa = Image.new("PA", SIZE, (1, 0))
    pa.putpalette(pal)
    pa.paste((0, 128), (0, 48, 96, 96))
    pa.save(tmp_path / "pa.tif")
    assert Image.open(tmp_path / "pa.tif").mode == "PA"
    arr, note = read_rgb(tmp_path / "pa.tif")
    assert (arr[:48] == 255).all() and (arr[48:] == (255, 127, 127)).all() and note.startswith("PA ")


def test_cmyk_without_profile_uses_the_formula(tmp_path):
    rng = np.random.default_rng(2)
    v = rng.integers(0, 256, SIZE + (4,), dtype=np.uint8)
    v[0, 0] = (100, 50, 0, 30)
    Image.frombytes("CMYK", SIZE, v.tobytes()).save(tmp_path / "c.tif")
    arr, note = read_rgb(tmp_path / "c.tif")
    c = v.astype(np.float64) / 255
    want = np.rint(255 * (1 - c[..., :3]) * (1 - c[..., 3:])).astype(np.uint8)
    assert np.array_equal(arr, want)
    assert arr[0, 0].tolist() == [137, 181, 225]
    assert note.startswith("CMYK (no ICC profile")


def test_cmyk_with_embedded_icc_profile_goes_through_the_profile(tmp_path):
    icc = inverted_grey_cmyk_profile()
    im = Image.new("CMYK", SIZE, (0, 0, 0, 0))
    im.paste((255, 255, 255, 255), (0, 0, 96, 32))
    im.paste((255, 0, 0, 0), (0, 32, 96, 64))
    im.save(tmp_path / "icc.tif", icc_profile=icc)
    assert Image.open(tmp_path / "icc.tif").info.get("icc_profile") == icc
    arr, note = read_rgb(tmp_path / "icc.tif")
    assert note == "CMYK (embedded ICC profile to sRGB)"
    assert (arr[:32] >= 250).all()                       # full ink -> white under this profile
    assert (np.abs(arr[32:64].astype(int) - 60) <= 3).all()   # L = 25 grey, not the formula's cyan
    assert (arr[64:] <= 5).all()                         # no ink -> black (the formula gives white)
    ref = ImageCms.profileToProfile(im, ImageCms.ImageCmsProfile(BytesIO(icc)), ImageCms.createProfile("sRGB"),
                                    outputMode="RGB")
    assert np.array_equal(arr, np.asarray(ref))

    im.save(tmp_path / "bad.tif", icc_profile=b"not a profile")
    arr, note = read_rgb(tmp_path / "bad.tif")
    assert "unusable" in note and (arr[64:] == 255).all()


def test_ycbcr_is_converted(tmp_path):
    Image.new("YCbCr", SIZE, (100, 120, 140)).save(tmp_path / "y.tif")
    assert Image.open(tmp_path / "y.tif").mode == "YCbCr"
    arr, note = read_rgb(tmp_path / "y.tif")
    assert (arr == Image.new("YCbCr", (1, 1), (100, 120, 140)).convert("RGB").getpixel((0, 0))).all()
    assert (arr == (116, 94, 85)).all() and note.startswith("YCbCr")


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros(SIZE + (3,), np.uint8)
    a[0, :10] = (255, 0, 0)  # a red mark on the top row
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6  # stored rotated: view it turned 90 degrees clockwise
    im.save(tmp_path / "o.png", exif=exif)
    arr, note = read_rgb(tmp_path / "o.png")
    assert np.array_equal(arr, np.rot90(a, -1)) and "EXIF orientation 6" in note
    assert (arr[:10, -1] == (255, 0, 0)).all()


@pytest.mark.parametrize("name, make, mode", [
    ("float.tif", lambda: Image.fromarray(np.full(SIZE, 0.5, np.float32)), "F"),
    ("int32.tif", lambda: Image.fromarray(np.full(SIZE, 70000, np.int32)), "I"),
    ("small32.tif", lambda: Image.fromarray(np.full(SIZE, 200, np.int32)), "I"),
    ("lab.tif", lambda: Image.new("LAB", SIZE, (50, 128, 128)), "LAB"),
])
def test_unsupported_modes_are_rejected(tmp_path, name, make, mode):
    make().save(tmp_path / name)
    assert Image.open(tmp_path / name).mode == mode
    with pytest.raises(UnsupportedImage, match=rf"{name}.*mode {mode}.*8-bit RGB PNG or JPEG") as info:
        read_rgb(tmp_path / name)
    assert info.value.mode == mode and isinstance(info.value, PipelineError)


def test_hsv_in_memory_is_rejected():
    with pytest.raises(UnsupportedImage, match="HSV"):
        to_rgb(Image.new("HSV", SIZE))


def test_multiframe_tiff_is_rejected(tmp_path):
    Image.new("RGB", SIZE).save(tmp_path / "mf.tif", save_all=True, append_images=[Image.new("RGB", SIZE, (9, 9, 9))])
    with pytest.raises(UnsupportedImage, match=r"mf\.tif: 2 frames"):
        read_rgb(tmp_path / "mf.tif")


def test_folder_loader_lists_rejected_ids_and_records_conversions(tmp_path):
    Image.fromarray(grey16()).save(tmp_path / "sixteen.png")
    Image.new("RGB", SIZE, (1, 2, 3)).save(tmp_path / "plain.png")
    Image.new("RGBA", SIZE, (1, 2, 3, 0)).save(tmp_path / "alpha.png")
    paths = [str(tmp_path / n) for n in ("sixteen.png", "plain.png", "alpha.png")]
    conversions = {}
    x = data.load_folder_images(paths, conversions=conversions)
    assert x.shape == (3, 96, 96, 3) and (x[2] == 255).all()
    assert conversions == {"I;16 (16-bit grey scaled to 8 bit)": ["sixteen"], "RGBA (alpha composited on white)": ["alpha"]}
    assert "converted 1 image(s) from I;16 (16-bit grey scaled to 8 bit): sixteen" in summarize_conversions(conversions)
    assert summarize_conversions({"L (x)": list("abcdefg")}) == ["converted 7 image(s) from L (x): a, b, c, d, e, ... (2 more)"]

    Image.fromarray(np.zeros(SIZE, np.float32)).save(tmp_path / "flt.tif")
    Image.new("LAB", SIZE).save(tmp_path / "lab.tif")
    Image.new("RGB", SIZE).save(tmp_path / "multi.tif", save_all=True, append_images=[Image.new("RGB", SIZE)])
    bad = [str(tmp_path / n) for n in ("flt.tif", "lab.tif", "multi.tif")]
    listed = r"3 image\(s\).*flt \(F: .*lab \(LAB: .*multi \(RGB: 2 frames.*8-bit RGB PNG or JPEG"
    with pytest.raises(PipelineError, match=listed):
        data.load_folder_images(paths + bad)
