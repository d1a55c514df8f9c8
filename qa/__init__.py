"""Asset and program testing: checks that return findings, proofs, scenarios, the launch gate."""
