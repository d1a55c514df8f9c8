"""Lead scoring: behaviour points with decay and daily caps, fit points, MQL thresholds."""
