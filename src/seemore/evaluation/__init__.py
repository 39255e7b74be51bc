"""How trained models are scored: VQA accuracy and caption object-F1 (vqa.py), image-text
retrieval (retrieval.py), reconstruction (reconstruction.py) and the load of a mixture of
experts (expert_load.py). Each objective (objectives/) picks the ones that fit its model."""
