"""Federation benchmarks (issue #4): the cost of encrypted aggregation.

    scripts/bench federation [--quick] [--sweep]
    python -m benchmarks.federation [--quick] [--sweep] [--out FILE]

`encrypted_aggregation` simulates one round of a regional aggregator with N tenants, each
sending a float32 update of P backbone parameters pre-multiplied by its FedAvg weight (its
share of the examples), side by side with the plaintext baseline in the same run:

- client: encrypt the weighted update under the region's public context and serialise it;
- aggregator, encrypted: deserialise every client blob (parse the framing, then load the
  ciphertexts into TenSEAL, which `add` does), add the ciphertexts, serialise the sum
  (`privacy.he`); plaintext: read every float32 array and take the weighted average;
- key holder: deserialise and decrypt the sum, divide by the total weight; its error
  against the plaintext average.

`parameter_sweep` (`--sweep`) measures the same for several CKKS parameter sets: how the
default `CkksParams` was chosen. Every time is a median over repeats. Results go to stdout
as JSON (and to --out). More benchmark functions (e.g. a full Flower round) belong here,
one function per measurement, selected in `__main__`.

Modules: `fixtures` (simulated updates, parameter sets), `aggregation` (the encrypted and
plaintext rounds), `flower` (full Flower rounds), `report` (one-line summaries),
`__main__` (options, the JSON results).
"""
