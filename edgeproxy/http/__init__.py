"""Pure HTTP field grammar (RFC 9110, 9111, 9211, 9209). No I/O, no clock."""
