"""Test equipment: fakes, the network-namespace lab, simulators and the demos.
Never imported by the product."""
