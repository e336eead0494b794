"""A stand-in for PyAV on the GPU machine, whose image lacks it (and where the real one would not fit
the device tool's 64 MiB): the toy trainings and evaluations import hummingbird_t2v.data, which imports
av at the top, but never read or write a video file. Any use fails loudly."""


def __getattr__(name):
    raise ImportError(f"PyAV is not installed on this machine (av.{name})")
