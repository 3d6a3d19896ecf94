# Stand-in for python3-package.mk: a Py3Package installs what Build/Compile put under
# PKG_INSTALL_DIR's site-packages, then runs the package's Py3Package/<name>/install.
PYTHON3_PKG_DIR:=/usr/lib/python3.11/site-packages

define Py3Package
define Package/$(1)/install
	$$(INSTALL_DIR) $$(1)$$(PYTHON3_PKG_DIR)
	$$(CP) $$(PKG_INSTALL_DIR)$$(PYTHON3_PKG_DIR)/. $$(1)$$(PYTHON3_PKG_DIR)/
	$$(call Py3Package/$(1)/install,$$(1))
endef
endef
