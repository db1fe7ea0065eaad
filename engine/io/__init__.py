"""Reading and writing: images and tables in, preprocessing, result files and rendered pictures out."""
