"""Demo data: a realistic agent fleet, its history (seed_demo) and its live traffic (simulate)."""
