# A stand-in for the OpenWrt SDK's rules.mk, only what packaging/openwrt/Makefile uses, so its
# recipes run for real with GNU make off a router (tests/packaging/test_openwrt_make.py). The
# names and meanings are the SDK's; STAGING_ROOT is where the stand-in "installs" the package.
INCLUDE_DIR:=$(TOPDIR)/include
BUILD_DIR:=$(TOPDIR)/build
DL_DIR:=$(TOPDIR)/dl
PKG_BUILD_DIR=$(BUILD_DIR)/$(PKG_NAME)-$(PKG_VERSION)
PKG_INSTALL_DIR=$(PKG_BUILD_DIR)/ipkg-install
INSTALL_DIR:=install -d -m0755
INSTALL_BIN:=install -m0755
INSTALL_DATA:=install -m0644
INSTALL_CONF:=install -m0600
CP:=cp -fpR
