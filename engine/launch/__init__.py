"""What the launch gate records: proof approvals per asset version, waivers of findings, and
each program's launch. The checks themselves live in qa/; the gate reads their findings."""
