"""HTTP in: signature checks and envelope parsing for Kapso and Meta deliveries."""
