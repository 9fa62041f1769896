"""Pure RFC 9111 decisions: functions of header fields, stored metadata and `now`."""
