"""The ranking pipeline, one for offline evaluation and training and for online serving.

Components, each with a typed config and a batch call (offline) and a single-request call
(serving, `serving.pipeline`) over the same core code:

- `retrieve`: candidate sources (`RetrieveConfig`, `CandidateRetriever`);
- `features`: the ranking features and their inputs (`FeaturesConfig`, `CandidateFeatures`);
- `ranker`: the linear ranker, its fitting on candidate lists and selection;
- `rerank`: business rules and MMR diversity (`RerankConfig`, `Reranker`);
- `policy`: the policy filter (`PolicyConfig`, `PolicyFilter`);
- `pipeline`: the ranking stage composed (`RankingConfig`, `RankingPipeline`);
- `fit`: the ranker's leakage-free lists and `train_with_ranker`;
- `recommender`: the evaluation recommender (`TwoTowerRankerRecommender`).

The package is ML code: it reads nothing and imports no serving, storage or platform code.
"""
