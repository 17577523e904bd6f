"""Cold-start benchmark (issue #4): small tenants from the federated backbone vs solo.

    scripts/bench coldstart [--quick]
    python -m benchmarks.coldstart [--quick] [--seeds 0 1 2 3 4] [--rounds 5] [--out FILE]

In a temporary ATLASREC_HOME (SQLite, embedded), the small tenants of the demo mix get the
backbone a federation really publishes (`server.embedded.run_embedded`: Flower rounds,
user-level DP-SGD per tenant charged to its ledger, CKKS-encrypted aggregation), opened the
way `atlasrec train` opens it (`atlasrec.pipelines.train.load_parent_backbone`):

- `ml-docs` (40 users, `global`, home `in`) is a sparse member of region `in`'s federation
  with `ml-comedy`; it starts from `in`'s backbone (the global tier's too, as a second row).
- `ml-western` (30 users) is `solo` in the demo, so by its policy it never gets a backbone.
  Here it is registered, counterfactually, as a **new** `regional` tenant of `us` after
  `us`'s federation (`ml-family`, `ml-action`) ran: pure transfer, none of its data is in
  the backbone.

Each small tenant is evaluated on the temporal leave-last-out split of its interactions
(`atlasrec.evaluation`, NDCG@10): only the split's train part is ingested, so neither the
federation nor any model sees a held-out interaction. Per seed, both federations run afresh
(in a copy of the ingested home, federation seed = seed), then the training `atlasrec
train` runs (DP at the default epsilon with the DP towers; and without DP, the retrieval
model without its ranker) from fresh towers (solo) and from the backbone, training seed =
seed; plus the backbone with no local training at all (zero-shot), content-pretrained towers and
popularity for reference. Medians over seeds, the ratio of medians backbone / solo (the
target: >= 1.3) and the per-seed ratios.

Modules: `fixtures` (the cases, their data and homes), `runs` (federations, models per
seed), `report` (medians and ratios per case), `__main__` (options, the run, JSON).
"""
