# Stand-in for the SDK's package.mk: `make compile` prepares, compiles, and runs the install
# recipe of the package named PKG_NAME into STAGING_ROOT (the SDK would make an .ipk of it).
define BuildPackage
ifeq ($(1),$(PKG_NAME))
compile:
	rm -rf $$(PKG_BUILD_DIR) $$(STAGING_ROOT)
	$$(Build/Prepare)
	$$(Build/Compile)
	$$(call Package/$(1)/install,$$(STAGING_ROOT))
endif
endef
