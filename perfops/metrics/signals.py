"""Keep rollups attributed to an agent's current department and team."""
