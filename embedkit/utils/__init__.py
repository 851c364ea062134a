"""Small helpers shared by every stage (atomic outputs, environment)."""
