"""Quality evaluation of the engine on held-out people (the data set's val split)."""
