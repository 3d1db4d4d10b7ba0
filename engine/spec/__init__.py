"""The pure core's front door: YAML in, validated frozen `Procedure` out, errors with file:line:column."""
