"""The Sparkle data-generation pipeline: five stages, pluggable model backends, local or Ray executors."""
