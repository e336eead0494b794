"""The one name hummingbird_t2v.data.video_io imports from PyAV at the top (see av/__init__.py)."""


class VideoReformatter:
    def __init__(self, *args, **kwargs):
        raise ImportError("PyAV is not installed on this machine")
