"""Text -> latents -> frames pipelines and video export."""
