"""Teacher -> student block maps, layouts and block-importance analysis."""
