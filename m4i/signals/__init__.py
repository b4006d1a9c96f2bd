"""Per-record attack signals computed from generated captions (metric-based M^4I)."""
