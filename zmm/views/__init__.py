"""What the commands show, computed from the spool: the `zmm top` frame, the
`zmm backends` roster, the queue's waiting reasons, following jobs. Reads only;
nothing here prints."""

