"""Image-text and video-text reward models behind one small interface."""
