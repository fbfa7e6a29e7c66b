import numpy as np
import pytest
from imaging import encode, exif_rotated_jpeg, picture, png_claiming_size
from PIL import Image

from masksynth.data.decode import RejectedImage, decode_image

OPTS = dict(min_side=24, max_pixels=64_000_000, alpha_background=(255, 255, 255))


def test_decodes_by_content_not_extension():
    decoded = decode_image(encode(picture(1), "PNG"), "photo.jpg", **OPTS)
    assert decoded.format == "PNG"
    assert "ext_mismatch" in decoded.flags
    assert decoded.rgb.shape == (80, 96, 3) and decoded.rgb.dtype == np.uint8
    assert "ext_mismatch" not in decode_image(encode(picture(1), "PNG"), "x.PNG", **OPTS).flags


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"plain text, no image" * 5, "not an image"),
        (png_claiming_size(20000, 20000), "decompression bomb"),
        (encode(picture(1), "JPEG")[:400], "truncated or corrupt"),
        (encode(picture(1, (20, 40)), "PNG"), "too small: 20x40 px"),
    ],
)
def test_rejects_with_reason(data, reason):
    with pytest.raises(RejectedImage, match=reason):
        decode_image(data, "x.jpg", **OPTS)


def test_bomb_limit_is_configurable():
    data = encode(picture(1, (100, 100)), "PNG")
    with pytest.raises(RejectedImage, match="100x100 = 10,000 pixels > limit 9,999"):
        decode_image(data, "x.png", min_side=24, max_pixels=9_999, alpha_background=(0, 0, 0))


def test_alpha_is_flattened_on_the_chosen_background():
    rgba = Image.new("RGBA", (40, 40), (10, 20, 30, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 20, 40))  # left half fully transparent
    for background in [(255, 255, 255), (0, 128, 0)]:
        decoded = decode_image(
            encode(rgba, "PNG"), "x.png", min_side=24, max_pixels=10**8, alpha_background=background
        )
        assert "alpha_flattened" in decoded.flags
        assert tuple(decoded.rgb[5, 5]) == background
        assert tuple(decoded.rgb[5, 30]) == (10, 20, 30)


def test_opaque_rgba_is_not_reported_as_flattened():
    decoded = decode_image(encode(picture(2).convert("RGBA"), "PNG"), "x.png", **OPTS)
    assert decoded.mode == "RGBA" and "alpha_flattened" not in decoded.flags


@pytest.mark.parametrize(
    ("image", "fmt", "flag"),
    [
        (picture(3).convert("L"), "PNG", "grayscale"),
        (picture(3).convert("P", palette=Image.Palette.ADAPTIVE), "PNG", "palette"),
        (picture(3).convert("CMYK"), "JPEG", "cmyk"),
    ],
)
def test_modes_become_rgb(image, fmt, flag):
    decoded = decode_image(encode(image, fmt), "x", **OPTS)
    assert flag in decoded.flags
    assert decoded.rgb.shape[2] == 3


def test_sixteen_bit_is_scaled_not_clipped():
    grey = np.linspace(0, 65535, 64 * 32).reshape(32, 64).astype(np.uint16)
    decoded = decode_image(encode(Image.fromarray(grey), "PNG"), "x.png", **OPTS)
    assert "high_bit_depth" in decoded.flags
    assert decoded.rgb.min() == 0 and decoded.rgb.max() == 255
    assert len(np.unique(decoded.rgb[..., 0])) > 200  # a ramp, not a saturated block


def test_exif_orientation_is_applied():
    decoded = decode_image(exif_rotated_jpeg(picture(4, (100, 60)), 6), "x.jpg", **OPTS)
    assert "exif_rotated" in decoded.flags
    assert decoded.rgb.shape[:2] == (100, 60)  # 100 wide x 60 high, turned upright
