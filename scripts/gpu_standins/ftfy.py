"""A stand-in for ftfy on the GPU machine, whose image lacks it: the toy runs import the CLIP tokenizer
module but never tokenize with it. Any use fails loudly."""


def fix_text(text):
    raise ImportError("ftfy is not installed on this machine")
