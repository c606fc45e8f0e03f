"""Challenge scoring: per-case metrics at the sites, FeTS-style rankings, robustness, leaderboard."""
