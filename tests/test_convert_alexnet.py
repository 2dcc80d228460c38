"""torchvision AlexNet weights <-> squeezejax: exact round trip and logit parity."""

import numpy as np
import pytest

torch = pytest.importorskip('torch')

from squeezejax import convert, convert_alexnet, checkpoint  # noqa: E402
from squeezejax import model as model_lib  # noqa: E402
from squeezejax import torch_reference  # noqa: E402


@pytest.fixture(scope='module')
def twin():
  torch.manual_seed(0)
  return torch_reference.AlexNet(num_classes=10).eval()


@pytest.mark.parametrize('size', [224, 100])  # 100 px: floor pools and a 2x2 -> 6x6 pool
def test_logit_parity_and_round_trip(twin, size):
  state_dict = {k: v.numpy() for k, v in twin.state_dict().items()}
  spec, params = convert_alexnet.from_torchvision(state_dict)
  assert spec.num_classes == 10 and spec.cost()['params'] == sum(v.size for v in state_dict.values())
  images = np.random.default_rng(size).standard_normal((2, size, size, 3)).astype(np.float32)
  got = np.asarray(model_lib.from_params(spec, params)(images))
  with torch.no_grad():
    want = twin(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
  assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-4
  back = convert_alexnet.to_torchvision(spec, params)
  assert back.keys() == state_dict.keys()
  for key, value in state_dict.items():
    np.testing.assert_array_equal(back[key], value)


def test_convert_cli_reads_an_alexnet(twin, tmp_path):
  path = str(tmp_path / 'alexnet.pth')
  torch.save(twin.state_dict(), path)
  out = str(tmp_path / 'model')
  assert convert.main([f'--from={path}', f'--out={out}']) == 0
  spec, weights, meta = checkpoint.load_model(out)
  assert spec.family == 'alexnet' and spec.layout == 'torchvision'
  assert 'alexnet' in meta['source']
  want = {k: v.numpy() for k, v in twin.state_dict().items()}
  back = convert_alexnet.to_torchvision(spec, weights)
  for key, value in want.items():
    np.testing.assert_array_equal(back[key], value)
