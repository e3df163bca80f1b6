"""Quality evaluation of the engine on held-out people (the data set's val split).

``run.evaluate`` composes the stages: ``self_reenact`` and ``cross_reenact`` measure both engine
modes with the pure measures of ``metrics`` and the networks of ``judges``; ``cost`` times the
generator; ``report`` writes the JSON, the Markdown and the grids. ``cli`` registers the command.
"""
