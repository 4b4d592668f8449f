"""Runnable alignment programs (one per loop); each reads top to bottom: config, build, loop, save."""
