"""The sans-IO actor core: actors touch the world only through their `Context`."""
