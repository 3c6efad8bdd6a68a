"""Small helpers every layer may use: progress lines, messages, clocks, paths."""
