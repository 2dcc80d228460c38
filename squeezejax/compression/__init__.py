"""Deep Compression (Han, Mao and Dally 2016) for any squeezejax network.

  format      the authors' .net file (codebooks, biases, codes, relative indices),
              read and written byte for byte, plus a Huffman-coded variant
  accounting  bytes, KiB, MiB, the paper's MB labels, and the per-layer table
              (density, weight bits, index bits, fillers, rate)
  prune       magnitude pruning: Han's quality x std threshold or density targets
  share       trained weight sharing: 1-D k-means, centroid gradients per cluster
  compress    `squeezejax compress`: prune -> retrain -> share -> fine-tune -> file
  table2      Table 2's rows and Markdown (report.py draws its figure)
"""
