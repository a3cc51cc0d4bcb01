"""The names an export gives its layers and tensors: safe for Keras and ONNX, and never repeated."""
from service.exports.names import UniqueNames


def test_repeats_get_a_suffix_and_unsafe_characters_become_underscores():
    names = UniqueNames()
    assert [names(n) for n in ("dense", "dense", "dense_1", "dense")] == ["dense", "dense_1", "dense_1_1", "dense_2"]
    assert names("block/1 ä") == "block_1__"
    assert names("") == "layer"
    assert UniqueNames(empty="t")("") == "t"
