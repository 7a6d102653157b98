"""One router per resource; thin: parse, call a service, convert the result."""
