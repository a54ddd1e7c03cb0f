"""Network-partition resolution (NP resolvers) and forced stop."""
