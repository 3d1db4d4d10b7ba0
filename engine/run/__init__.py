"""Running a procedure: session (one run), runner (the step rules), gate, operator, context, leases, fleets, resume."""
