"""Darknet cfg parser and layer plan: sections, options, errors, float counts of real cfgs."""
import pytest

from effdet_tf.darknet import parse_cfg, parse_cfg_text, plan_layers, total_floats
from effdet_tf.errors import DarknetError

pytestmark = pytest.mark.real_data


def test_sections_options_and_line_numbers():
    """Whitespace is removed like Darknet does; comments are skipped; lines are kept."""
    cfg = parse_cfg_text("""# comment
[net]
width = 320
height=256
; another comment

[convolutional]
filters=8
size = 3
activation=leaky

[yolo]
anchors = 12, 18,  37, 49
""", "t.cfg")
    assert cfg.input_shape == (256, 320, 3)
    assert [(s.type, s.line, s.index) for s in cfg.layers] == [
        ("convolutional", 7, 0), ("yolo", 12, 1)]
    assert cfg.layers[0].get_int("size") == 3
    assert cfg.layers[1].get_ints("anchors") == [12, 18, 37, 49]
    assert cfg.layers[0].get_str("activation", "logistic") == "leaky"


def test_unknown_section_names_section_and_line():
    """An unknown section type is an error naming it, its line and the file."""
    with pytest.raises(DarknetError, match=r"x\.cfg: unknown or unsupported section "
                                           r"\[magic\] at line 4"):
        parse_cfg_text("[net]\nwidth=32\n\n[magic]\nfoo=1\n", "x.cfg")


@pytest.mark.parametrize("text,message", [
    ("width=3\n[net]\n", "before any section"),
    ("[net]\n[convolutional]\nfilters\n", "line 3: expected 'key=value'"),
    ("[convolutional]\nfilters=3\n", "first section must be \\[net\\]"),
    ("[net]\nwidth=3\n", "no layers"),
    ("[net]\n[convolutional\n", "malformed section header"),
])
def test_malformed_cfg(text, message):
    """Structural errors name the problem."""
    with pytest.raises(DarknetError, match=message):
        parse_cfg_text(text, "bad.cfg")


@pytest.mark.parametrize("layer,message", [
    ("[convolutional]\nfilters=abc\n", r"bad\.cfg: \[convolutional\] at line 2 \(layer 0\): option "
                                       r"'filters=abc' is not an integer"),
    ("[convolutional]\nactivation=swishy\n", "unsupported activation 'swishy'"),
    ("[convolutional]\nfilters=4\ngroups=3\n", "groups=3 does not divide"),
    ("[convolutional]\nfilters=4\n[route]\nlayers=1\n", "points to layer 1, outside 0..0"),
    ("[convolutional]\nfilters=4\ndilation=2\n", "option 'dilation' is not supported"),
    ("[convolutional]\nfilters=4\n[shortcut]\nfrom=-1\n[shortcut]\nfrom=-2\n"
     "[convolutional]\nfilters=2\n[shortcut]\nfrom=-3\n", "layer 1 has shape"),
])
def test_bad_layers(layer, message):
    """Layer-level errors name the file, the section, its line and the option."""
    cfg = parse_cfg_text("[net]\n" + layer, "bad.cfg")
    with pytest.raises(DarknetError, match=message):
        plan_layers(cfg, input_shape=(32, 32, 3))


def test_missing_cfg_file(tmp_path):
    """A missing file is a DarknetError naming it."""
    with pytest.raises(DarknetError, match="cannot read cfg .*nope.cfg"):
        parse_cfg(tmp_path / "nope.cfg")


@pytest.mark.parametrize("name,floats,layers", [
    ("yolov4.cfg", 64_429_405, 162), ("yolov4-tiny.cfg", 6_062_814, 38),
    ("csdarknet53-omega.cfg", 27_677_512, 108)])
def test_real_cfg_float_counts(shared, name, floats, layers):
    """Float counts of the official cfgs equal SOURCE.md's (and the published file sizes)."""
    cfg = parse_cfg(shared("darknet", "alexeyab-cfg", name))
    plans = plan_layers(cfg)
    assert len(plans) == layers
    assert total_floats(plans) == floats


def test_yolov4_backbone_plan(shared):
    """yolov4.cfg layers 54, 85, 104: 256, 512, 1024 channels at strides 8, 16, 32."""
    cfg = parse_cfg(shared("darknet", "alexeyab-cfg", "yolov4.cfg"))
    plans = plan_layers(cfg, input_shape=(416, 416, 3), upto=105)
    assert [plans[i].shape for i in (54, 85, 104)] == [
        (52, 52, 256), (26, 26, 512), (13, 13, 1024)]
    assert sum(p.conv is not None for p in plans) == 72
    assert total_floats(plans) == 26_652_512
    spp = plan_layers(cfg, input_shape=(416, 416, 3))
    assert [spp[i].shape for i in (108, 110, 112, 113)] == [(13, 13, 512)] * 3 + [
        (13, 13, 2048)]
