import importlib.resources

import hummingbird_t2v


def test_version_is_set():
    assert hummingbird_t2v.__version__


def test_clip_vocabulary_ships_with_the_package():
    vocab = importlib.resources.files("hummingbird_t2v") / "assets" / "bpe_simple_vocab_16e6.txt.gz"
    assert vocab.is_file()
