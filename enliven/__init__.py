"""enliven: real-time portrait animation driven by face landmarks."""

__version__ = "0.1.0"
