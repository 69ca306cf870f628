"""Data in: datasets/ (what each dataset is, the embedded MNIST-5k builder), input_pipeline.py
(TFDS -> host batches of image, label, id), augment.py, fake_data.py and prepare.py."""
