"""File-system primitives every stage may use: checksummed files (:mod:`metarec._io.checksums`)
and the one-writer folder lock (:mod:`metarec._io.lock`)."""
