"""The trio daemon: listeners, links, delivery, reload and shutdown."""
