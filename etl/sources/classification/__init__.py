"""Infrastructure labels (SPEC 3.4): what kind of network an address is in (a Tor exit, a cloud
provider and region, a hosting provider, a residential ISP), from lists kept on disk
(`lists`), as one vectorized join of the whole frame against every list (`steps`)."""
