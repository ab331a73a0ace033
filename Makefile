# vitkit: two commands do everything on a fresh Debian 12 machine (as root):
#   make demo   install missing packages, build (Release), run the main job
#   make test   install missing packages, build, run the whole test suite
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

# Debian packages vitkit needs to build, test and run its demo.
DEPS := cmake g++ make pkg-config git \
  libdnnl-dev libeigen3-dev liblapack-dev liblapacke-dev libtomlplusplus-dev nlohmann-json3-dev \
  libcli11-dev libstb-dev libjpeg-dev libzip-dev zlib1g-dev libgtest-dev libgmock-dev libbenchmark-dev \
  python3 python3-torch python3-torchvision python3-numpy python3-pil python3-onnx dataset-fashion-mnist \
  clang lld libclang-rt-14-dev

.PHONY: all deps build demo test bench clean

all: build

deps:
	@missing=$$(for p in $(DEPS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "vitkit: installing missing Debian packages: $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else \
	    echo "vitkit: missing Debian packages: $$missing"; \
	    echo "vitkit: run 'make deps' as root, or: sudo apt-get install $$missing"; exit 1; \
	  fi; \
	fi

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)
	cmake --build $(BUILD) -j $(JOBS)

demo: build
	./scripts/demo.sh $(BUILD)/vitkit

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 1800

bench: build
	VITKIT=$(abspath $(BUILD))/vitkit ./bench/peers/run.sh

clean:
	rm -rf $(BUILD)
