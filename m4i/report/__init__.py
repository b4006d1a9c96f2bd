"""Tables and figures of the study, built from attack metrics.json and utility JSON files."""
